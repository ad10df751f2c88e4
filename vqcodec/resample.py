"""Coding an image at another resolution: how one model serves several rates on the quality ladder.

A rung of the ladder (``zoo.registry.Rung``) is a model and a scale. The encoder resizes the
image to ``scale`` times its size, codes that, and records the coded size in the file (format
version 3 and later); the decoder decodes the codes at the coded size and resizes the result back. Below 1
the bits fall about as the pixel count does (scale 0.5: a quarter of the codes) and the detail
lost is the finest; above 1 the model sees a smoother image, which it reconstructs better, and
spends more codes on it. It is the lever AV1 (super-resolution frames) and VVC (reference picture
resampling) use, and it costs no training: every rung of a model shares its priors and weights.

Both directions use one resampling filter on the model's float images: bicubic with antialiasing
(the filter widens by the reduction factor when shrinking, as Pillow's does), so shrinking does not
alias. The decoder's resize runs on one thread like the rest of the VQ-VAE decode, so a file gives
the same pixels whatever the thread count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vqcodec.errors import VQCodecError

if TYPE_CHECKING:
    import torch

MIN_SCALE, MAX_SCALE = 0.125, 2.0


def check_scale(scale: float) -> float:
    """``scale`` as a float within [MIN_SCALE, MAX_SCALE], or a VQCodecError."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise VQCodecError(f"scale must be a number, not {scale!r}") from None
    if not (math.isfinite(value) and MIN_SCALE <= value <= MAX_SCALE):
        raise VQCodecError(f"scale must be from {MIN_SCALE} to {MAX_SCALE}, not {scale!r}")
    return value


def coded_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) at which an image of ``width`` x ``height`` is coded at ``scale``."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A float image batch (N, C, H, W) resized to ``height`` x ``width`` (antialiased bicubic)."""
    import torch.nn.functional as F  # here, so the sizes above serve `vqcodec info` without torch

    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
