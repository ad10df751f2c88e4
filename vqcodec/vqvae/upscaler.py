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

import torch
from torch import nn

from vqcodec.threads import run_all

BAND_ROWS = 256  # rows per band: memory is bounded whatever the image's height


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

    def forward(self, x: torch.Tensor, enlargement: float, workers: int = 1) -> torch.Tensor:
        """``x`` (B, C, H, W), the bicubic enlargement of the decoder's output, with the residual
        added. Runs in bands of BAND_ROWS full-width rows with ``reach`` rows of margin, at bounded
        memory, up to ``workers`` bands at once in threads: each output row sees exactly the rows it
        would in one piece. The bands depend only on the image's size, so its pixels do too: oneDNN
        picks its order of summation from a convolution's shape, so a band may round differently from
        one piece (a band of a few rows measurably did, which is why the last band overlaps the one
        before rather than being short); run under ``one_thread()``, as the codec runs it, each band
        computes on one thread, so the pixels do not depend on ``workers`` either."""
        h = x.shape[2]
        if h <= BAND_ROWS:
            return x + self.net(self._with_level(x, enlargement))
        out = torch.empty_like(x)

        def band(start: int) -> None:
            y0 = min(start, h - BAND_ROWS)  # the last band overlaps the one before: every band is as tall
            lo, hi = max(0, y0 - self.reach), min(h, y0 + BAND_ROWS + self.reach)
            residual = self.net(self._with_level(x[:, :, lo:hi], enlargement))[:, :, start - lo : y0 - lo + BAND_ROWS]
            out[:, :, start : y0 + BAND_ROWS] = x[:, :, start : y0 + BAND_ROWS] + residual

        run_all(band, range(0, h, BAND_ROWS), workers)
        return out

    @staticmethod
    def _with_level(x: torch.Tensor, enlargement: float) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.cat([x, x.new_full((b, 1, h, w), enlargement - 1.0)], 1)
