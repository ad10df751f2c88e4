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

# (level, probabilities (B, P, K), positions (P, 2) of (row, column), inside (B, P) bool or None:
# whether each position lies inside its map's extent) -> chosen codes (B, P); 0 outside is fine
Pick = Callable[[int, torch.Tensor, np.ndarray, "np.ndarray | None"], torch.Tensor]


def inside_extents(extents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, B) bool: whether position (r, c) lies inside map b's extent ``extents[b]`` (rows,
    columns) in a batch of maps padded to ``height`` x ``width``."""
    ext = extents.cpu()
    return (torch.arange(height)[:, None, None] < ext[:, 0]) & (torch.arange(width)[None, :, None] < ext[:, 1])


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
    extents: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Code maps (bottom first, each (batch, H_l, W_l) int64) chosen step by step along each prior's
    decoding ``order``: the top level first, each lower level conditioned on all levels above.
    With ``extents`` (by level, (batch, 2) rows and columns), map b of level l is the top-left
    ``extents[l][b]`` of its padded map: maps of several sizes go through the same steps, and
    the codes outside a map's extent are 0."""
    device = priors[0].device
    maps = [torch.zeros((batch, *s), dtype=torch.long, device=device) for s in shapes]
    for level in reversed(range(len(priors))):
        h, w = shapes[level]
        label = labels[level] if labels is not None else None
        ext = extents[level] if extents is not None else None
        inside = None if ext is None else inside_extents(ext, h, w).numpy()
        stepper = priors[level].stepper(batch, h, w, levels_above(maps, level), label, temperature, order, ext)
        out = maps[level]
        for step, positions in enumerate(stepper.order):
            here = None if inside is None else inside[positions[:, 0], positions[:, 1]].T  # (B, P)
            codes = pick(level, stepper.probs(step), positions, here).to(device)
            if here is not None:
                codes = codes * torch.from_numpy(here).to(device)
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
