"""The one autoregressive loop: levels top-down, each level step by step along its decoding order.

The decoder (codes from range-coder symbols) and the sampler (codes drawn at random) differ only
in how codes are chosen from their probabilities; both run this loop, so the order of steps, the
conditioning on the levels above and the stepper protocol are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from vqcodec.priors.contract import IntegerPrior

# (level, probabilities (B, P, K), positions (P, 2) of (row, column)) -> chosen codes (B, P)
Pick = Callable[[int, torch.Tensor, np.ndarray], torch.Tensor]


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
    order: str = "fast",
) -> list[torch.Tensor]:
    """Code maps (bottom first, each (batch, H_l, W_l) int64) chosen step by step along each prior's
    decoding ``order``: the top level first, each lower level conditioned on all levels above."""
    device = priors[0].device
    maps = [torch.zeros((batch, *s), dtype=torch.long, device=device) for s in shapes]
    for level in reversed(range(len(priors))):
        h, w = shapes[level]
        label = labels[level] if labels is not None else None
        stepper = priors[level].stepper(batch, h, w, levels_above(maps, level), label, temperature, order)
        out = maps[level]
        for step, positions in enumerate(stepper.order):
            codes = pick(level, stepper.probs(step), positions).to(device)
            stepper.record(step, codes)
            out[:, torch.from_numpy(positions[:, 0]), torch.from_numpy(positions[:, 1])] = codes
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
