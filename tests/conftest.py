"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run small models: one thread is faster on a shared 2-core machine (the decoder's
    tiny GEMMs most of all). Tests that need more threads set them in their own subprocess."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_image(index: int, height: int = 32, width: int = 40) -> np.ndarray:
    """A smooth colour gradient with a flat rectangle and a disc on it (uint8, H x W x 3)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 1)
        img[..., c] = phase + a * x / width + b * y / height
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.uniform(0, 1, 3)
    cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(3, 9)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    """A folder of 8 small RGB PNGs (gradients plus shapes), for quick training runs."""
    folder = tmp_path / "tiny_images"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(_tiny_image(i)).save(folder / f"img{i}.png")
    return folder
