"""Promises of the README and docs that no other test measures: the quality ladder's bits and PSNR rising
together, quality by quality, on a photo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vqcodec
from vqcodec.zoo import registry


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / mse)


@pytest.mark.slow
def test_bits_and_psnr_rise_with_quality_as_measured() -> None:
    """Each quality of the shipped ladder, 1 to 8, on a 192x128 crop of the sample photo: the file's bits per
    pixel and the decoded image's PSNR, measured here, both rise strictly from one quality to the next."""
    steps = registry.ladder()
    assert [r.quality for r in steps] == list(range(1, 9))
    sample = Path(vqcodec.__file__).parent / "samples" / "endeavour.png"
    with Image.open(sample) as im:
        pixels = np.ascontiguousarray(np.asarray(im.convert("RGB"))[40:168, 100:292])
    assert pixels.shape == (128, 192, 3)
    bpp, psnr = [], []
    for r in steps:
        data = vqcodec.compress(pixels, quality=r.quality)
        bpp.append(8 * len(data) / (128 * 192))
        psnr.append(_psnr(pixels, vqcodec.decompress(data)))
    figures = [f"q{q}: {b:.3f} bpp {p:.2f} dB" for q, b, p in zip(range(1, 9), bpp, psnr)]
    assert all(a < b for a, b in zip(bpp, bpp[1:])), figures
    assert all(a < b for a, b in zip(psnr, psnr[1:])), figures
