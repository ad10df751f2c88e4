"""What the codec and the sampler need from a prior: the contract every architecture fulfils.

A prior models p(codes of one level | codes of the levels above, label) as one categorical over K
codes per position. The codec only ever talks to the *integer* twin of a prior, because encoder
and decoder must compute bit-identical probabilities:

* ``parallel_probs`` gives every position's probabilities at once, given all codes (the encoder);
* ``decode_order`` lists the steps in which a decoder may choose the codes ("raster": one at a
  time; "fast": as many at once as the architecture's context allows), and the encoder writes the
  symbols in that order;
* ``stepper`` walks those steps with cached state (the decoder and the sampler), and must give
  exactly the same integers as ``parallel_probs``. With ``extents`` it walks a batch of maps of
  several sizes padded to one: map b is ``extents[b]`` (rows, columns), and at its positions the
  stepper gives exactly the probabilities of ``parallel_probs`` on that map alone, whatever
  codes are recorded outside it (so tiles of every shape decode in one batch);
* ``state`` is the tensors that go into a model file.

A prior may also have ``ordered_probs``: ``parallel_probs`` already laid out in decoding order
(B, N, K), which the encoder writes as they are; ``ordered_probs()`` below falls back on
``parallel_probs`` for a prior without it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


class PriorStepper(Protocol):
    """Step-by-step decoding along ``order`` (a list of (P, 2) arrays of (row, column))."""

    order: list[np.ndarray]

    def probs(self, step: int) -> torch.Tensor:
        """Integer-valued float64 probabilities (B, P, K) of the step's positions."""
        ...

    def record(self, step: int, codes: torch.Tensor) -> None:
        """Record the codes (B, P) chosen at the step's positions."""
        ...


class IntegerPrior(Protocol):
    """An integer prior as the codec uses it (see the module docstring)."""

    config: Any  # has at least num_codes, num_classes and cond_levels
    device: torch.device

    def parallel_probs(
        self, codes: torch.Tensor, cond: list[torch.Tensor] | None = None, label: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Probabilities (B, H, W, K) of every position of ``codes`` (B, H, W)."""
        ...

    def decode_order(self, height: int, width: int, order: str = "fast") -> list[np.ndarray]: ...

    def stepper(
        self, batch: int, height: int, width: int, cond: list[torch.Tensor] | None = None,
        label: torch.Tensor | None = None, temperature: float = 1.0, order: str = "fast",
        extents: torch.Tensor | None = None,
    ) -> PriorStepper: ...

    def state(self) -> dict[str, torch.Tensor]: ...


def ordered_probs(prior: IntegerPrior, codes: torch.Tensor, cond: list[torch.Tensor] | None = None,
                  order: str = "fast") -> torch.Tensor:
    """Probabilities (B, N, K) of every position of ``codes`` (B, H, W) in ``prior``'s decoding order."""
    own = getattr(prior, "ordered_probs", None)
    if own is not None:
        return own(codes, cond, order=order)
    probs = prior.parallel_probs(codes, cond)
    both = np.concatenate(prior.decode_order(codes.shape[1], codes.shape[2], order))
    return probs[:, torch.from_numpy(both[:, 0]), torch.from_numpy(both[:, 1])]
