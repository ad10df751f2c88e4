"""Training data: random crops and flips from a folder of images.

Sample ``i`` of a run is a pure function of (seed, i): the crop it takes does not depend on which
worker process made it or whether the run was resumed, so ``--resume`` repeats the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vqcodec.imageio import _full_scale, read_image, to_model_input


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], as the model sees it (``imageio.to_model_input``)."""
    img = read_image(path)
    return to_model_input(img.pixels, img.bit_depth)[0].permute(1, 2, 0).numpy()


def pad_to(pix: np.ndarray, size: int) -> np.ndarray:
    """Edge-pad an (H, W, C) image so both sides are at least ``size`` (crops of small images)."""
    h, w = pix.shape[:2]
    if h >= size and w >= size:
        return pix
    return np.pad(pix, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="edge")


def load_rgb_integers(path: Path) -> tuple[np.ndarray, int]:
    """(H, W, 3) integer pixels (gray repeated) and their full scale: a quarter of the float
    image's memory for 8-bit photos, so a pool of thousands of photos stays cached."""
    img = read_image(path)
    pix = np.asarray(img.pixels)
    if pix.ndim == 2:
        pix = pix[..., None]
    if pix.shape[2] == 1:
        pix = np.repeat(pix, 3, axis=2)
    return np.ascontiguousarray(pix), _full_scale(img.bit_depth)


class RandomCrops(Dataset):
    """Index ``i`` -> a random ``crop`` x ``crop`` patch (C, H, W) of a random image, maybe flipped.
    Images are cached as their integer pixels; a patch is scaled to [0, 1] as
    ``imageio.to_model_input`` does (the same float32 values)."""

    def __init__(self, files: list[Path], crop: int, seed: int) -> None:
        self.files, self.crop, self.seed = files, crop, seed
        self._cache: dict[int, tuple[np.ndarray, int]] = {}  # per worker process

    def __len__(self) -> int:
        return 2**62

    def _image(self, k: int) -> tuple[np.ndarray, int]:
        if k not in self._cache:
            pix, full = load_rgb_integers(self.files[k])
            self._cache[k] = pad_to(pix, self.crop), full
        return self._cache[k]

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        pix, full = self._image(int(rng.integers(len(self.files))))
        h, w = pix.shape[:2]
        y, x = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        patch = pix[y : y + self.crop, x : x + self.crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return torch.from_numpy(patch.transpose(2, 0, 1).astype(np.float32)) / full


class StepSampler(Sampler[int]):
    """Sample indices for steps [start, end): this rank's share of each global batch."""

    def __init__(self, start: int, end: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.end, self.batch, self.rank, self.world = start, end, batch, rank, world

    def __len__(self) -> int:
        return (self.end - self.start) * self.batch

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.end):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
