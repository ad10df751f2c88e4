"""What the codec and the sampler need from a prior: the contract every architecture fulfils.

A prior models p(codes of one level | codes of the levels above, label) as one categorical over K
codes per position. The codec only ever talks to the *integer* twin of a prior, because encoder
and decoder must compute bit-identical probabilities:

* ``parallel_probs`` gives every position's probabilities at once, given all codes (the encoder);
* ``stepper`` walks positions in the architecture's decoding order with cached state (the decoder
  and the sampler), and must give exactly the same integers as ``parallel_probs``;
* ``state`` is the tensors that go into a model file, from which ``from_tensors`` rebuilds it.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class PriorStepper(Protocol):
    """Raster-order decoding: ``row(r)`` when a row starts, then ``probs_at``/``put`` per column."""

    def row(self, r: int) -> None: ...

    def probs_at(self, r: int, c: int) -> torch.Tensor:
        """Integer-valued float64 probabilities (B, K) of the code at (r, c)."""
        ...

    def put(self, r: int, c: int, codes: torch.Tensor) -> None:
        """Record the codes (B,) chosen at (r, c)."""
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

    def stepper(
        self, batch: int, height: int, width: int, cond: list[torch.Tensor] | None = None,
        label: torch.Tensor | None = None, temperature: float = 1.0,
    ) -> PriorStepper: ...

    def state(self) -> dict[str, torch.Tensor]: ...
