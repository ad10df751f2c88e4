"""The one autoregressive loop: levels top-down, each level position by position.

The decoder (codes from range-coder symbols) and the sampler (codes drawn at random) differ only
in how a code is chosen from its probabilities; both run this loop, so the order of steps, the
conditioning on the levels above and the stepper protocol are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from vqcodec.priors.contract import IntegerPrior

# (level, probabilities (B, K), row, column) -> chosen codes (B,)
Pick = Callable[[int, torch.Tensor, int, int], torch.Tensor]


def levels_above(maps: Sequence[torch.Tensor], level: int) -> list[torch.Tensor] | None:
    """The code maps that condition ``level``'s prior: every level above it, nearest first."""
    return list(maps[level + 1 :]) or None


def generate(
    priors: Sequence[IntegerPrior],
    shapes: Sequence[tuple[int, int]],
    batch: int,
    pick: Pick,
    labels: Sequence[torch.Tensor | None] | None = None,
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """Code maps (bottom first, each (batch, H_l, W_l) int64) chosen one code at a time: the top
    level first, each lower level conditioned on all levels above."""
    device = priors[0].device
    maps = [torch.zeros((batch, *s), dtype=torch.long, device=device) for s in shapes]
    for level in reversed(range(len(priors))):
        h, w = shapes[level]
        label = labels[level] if labels is not None else None
        stepper = priors[level].stepper(batch, h, w, levels_above(maps, level), label, temperature)
        out = maps[level]
        for r in range(h):
            stepper.row(r)
            for c in range(w):
                codes = pick(level, stepper.probs_at(r, c), r, c).to(device)
                stepper.put(r, c, codes)
                out[:, r, c] = codes
    return maps


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a stepper loop on one CPU thread: its steps are many tiny ops, and a thread pool only adds
    synchronisation to each (measured several times slower with 2 threads). Results do not change."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
