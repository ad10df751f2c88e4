"""A learned upscaler for the rungs of the quality ladder coded below full size.

A rung below scale 1 codes a smaller image; its decoder's output is brought back to the image's
size. Bicubic resizing cannot bring back the detail finer than the coded size, and a decoder
refit for those rungs gains almost nothing (0.02 dB on BSD validation photos, docs/models.md):
its output lives at the coded size. So the model may carry a small convolutional network that
runs at the image's size on the bicubic result, given how far it was enlarged, and adds a residual
(single-image super-resolution, SRCNN-like, on the decoder's output). It only shapes pixels after
the codes are decoded, so the bits and their exactness do not depend on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from vqcodec.workers import map_forked

BAND_ROWS = 256  # rows per band: memory is bounded whatever the image's height
# multiply-adds below which the bands run here, not in worker processes: starting a pool costs
# ~15-50 ms, what ~2 G multiply-adds take on one core (a 16-channel upscaler on a Kodak image:
# 2.2 G, 0.063 s here against 0.116 s in two workers)
FORK_ABOVE_MACS = 4e9


class Upscaler(nn.Module):
    """``layers`` 3x3 convolutions of ``channels`` channels (ReLU between) from RGB plus the
    enlargement (output width over coded width, minus 1) to an RGB residual. The last convolution
    starts at zero, so a new upscaler is bicubic resizing until it is trained."""

    def __init__(self, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError("an upscaler needs at least 2 layers")
        convs: list[nn.Module] = [nn.Conv2d(in_channels + 1, channels, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            convs += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        convs.append(nn.Conv2d(channels, in_channels, 3, padding=1))
        nn.init.zeros_(convs[-1].weight)
        nn.init.zeros_(convs[-1].bias)
        self.net = nn.Sequential(*convs)
        self.reach = layers  # rows of context each output row needs on either side
        self.macs_per_pixel = sum(c.in_channels * c.out_channels * 9 for c in convs if isinstance(c, nn.Conv2d))

    def forward(self, x: torch.Tensor, enlargement: float, workers: int = 1) -> torch.Tensor:
        """``x`` (B, C, H, W), the bicubic enlargement of the decoder's output, with the residual
        added. Runs in bands of BAND_ROWS full-width rows with ``reach`` rows of margin, at bounded
        memory; with ``workers`` > 1 (inference only) up to that many bands at once in forked
        processes of one thread each (``vqcodec.workers``), where the work pays for starting them
        (``FORK_ABOVE_MACS``). Each output row sees exactly the rows it
        would in one piece. The bands depend only on the image's size, so its pixels do too: oneDNN
        picks its order of summation from a convolution's shape, so a band may round differently from
        one piece (a band of a few rows measurably did, which is why the last band overlaps the one
        before rather than being short); run under ``one_thread()``, as the codec runs it, each band
        computes on one thread, as it does in a worker, so the pixels do not depend on ``workers``."""
        h = x.shape[2]
        if h <= BAND_ROWS:
            return x + self.net(self._with_level(x, enlargement))
        if self.macs_per_pixel * x.shape[0] * h * x.shape[3] < FORK_ABOVE_MACS:
            workers = 1
        band = functools.partial(self._band, x, enlargement)
        starts = range(0, h, BAND_ROWS)
        out = torch.empty_like(x)
        for start, rows in zip(starts, map_forked(band if workers <= 1 else functools.partial(_as_numpy, band),
                                                  starts, workers)):
            out[:, :, start : start + rows.shape[2]] = torch.as_tensor(rows, device=x.device)
        return out

    def _band(self, x: torch.Tensor, enlargement: float, start: int) -> torch.Tensor:
        """Rows from ``start`` to the end of its band (BAND_ROWS, or to the image's end), upscaled."""
        h = x.shape[2]
        y0 = min(start, h - BAND_ROWS)  # the last band overlaps the one before: every band is as tall
        lo, hi = max(0, y0 - self.reach), min(h, y0 + BAND_ROWS + self.reach)
        residual = self.net(self._with_level(x[:, :, lo:hi], enlargement))[:, :, start - lo : y0 - lo + BAND_ROWS]
        return x[:, :, start : y0 + BAND_ROWS] + residual

    @staticmethod
    def _with_level(x: torch.Tensor, enlargement: float) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.cat([x, x.new_full((b, 1, h, w), enlargement - 1.0)], 1)


def _as_numpy(job: Callable[[int], torch.Tensor], start: int) -> np.ndarray:
    """A band as a numpy array: what a worker process sends back (``vqcodec.workers``)."""
    with torch.no_grad():
        return job(start).cpu().numpy()
