"""Activation ranges of a float prior over calibration data, collected with forward hooks.

An integer twin needs, for every activation it quantizes, the largest magnitude seen on real
codes. Reading them off the float model's own forward pass (hooks on the modules that produce
them) keeps one definition of the network: no second, hand-copied forward pass to drift from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Tap:
    """The output of ``module`` (item ``output`` of a tuple output) feeds the range called ``name``."""

    module: nn.Module
    name: str
    output: int | None = None


@torch.no_grad()
def activation_ranges(model: nn.Module, taps: list[Tap], batches: Iterable[tuple]) -> dict[str, float]:
    """Largest |activation| per tap name; ``batches`` yields the model's (codes, cond, label) inputs.
    The model runs in float64 and eval mode (no dropout), then is restored."""
    ranges: dict[str, float] = {}

    def hook_for(tap: Tap):
        def hook(module: nn.Module, args: tuple, out) -> None:
            x = out if tap.output is None else out[tap.output]
            ranges[tap.name] = max(ranges.get(tap.name, 0.0), float(x.detach().abs().max()))

        return hook

    handles = [tap.module.register_forward_hook(hook_for(tap)) for tap in taps]
    was_training = model.training
    model.eval().double()
    try:
        for codes, cond, label in batches:
            model(codes, cond, label)
    finally:
        for handle in handles:
            handle.remove()
        model.float().train(was_training)
    return ranges
