"""Code datasets (Algorithm 2, lines 1-7): encode a folder once, train the priors on the codes.

A code dataset is a folder of plain numpy files, no pickle: ``level{l}.npy`` (uint16, shape
(N, H_l, W_l), level 0 the bottom), ``labels.npy`` (int64 class per crop, -1 without labels) and
``meta.json`` saying how the crops were made and which model made them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from vqcodec.errors import VQCodecError
from vqcodec.imageio import list_images
from vqcodec.resample import check_scale, coded_size, resize
from vqcodec.train.crops import load_rgb, pad_to
from vqcodec.vqvae import VQVAE
from vqcodec.zoo.files import fingerprint


def class_names(folder: Path, files: list[Path]) -> list[str]:
    """One class per sub-folder directly under ``folder`` (sorted names)."""
    names = sorted({f.relative_to(folder).parts[0] for f in files if len(f.relative_to(folder).parts) > 1})
    if not names:
        raise VQCodecError(f"--labels needs one sub-folder per class under {folder}")
    return names


def rung_pixels(pix: np.ndarray, scale: float) -> np.ndarray:
    """An (H, W, 3) float image as a rung at ``scale`` codes it: resized whole, as ``compress`` does."""
    if scale == 1.0:
        return pix
    h, w = pix.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(pix.transpose(2, 0, 1)))[None]
    return resize(x, *coded_size(w, h, scale))[0].numpy().transpose(1, 2, 0)


@torch.no_grad()
def extract_codes(
    model: VQVAE,
    data: str | Path,
    out: str | Path,
    crop: int = 256,
    crops_per_image: int = 8,
    seed: int = 0,
    labels: bool = False,
    device: str = "cpu",
    batch: int = 16,
    min_scale: float = 1.0,
    scale: float = 1.0,
) -> dict:
    """Encode random crops (with random flips) of every image; crops equal to ``crop`` pixels square.

    With ``min_scale`` < 1 each crop covers ``crop / s`` pixels, s uniform in [min_scale, 1], resized
    down to ``crop``: more varied scales from a small dataset. With ``scale`` the whole image is
    first resized as a rung of the quality ladder at that scale resizes it (``resample``), so a
    prior can learn the codes that rung makes."""
    data, out = Path(data), Path(out)
    scale = check_scale(scale)
    stride = model.config.stride
    if crop % (stride * 2):
        raise VQCodecError(f"--crop must be a multiple of {stride * 2}")
    files = list_images(data)
    names = class_names(data, files) if labels else []
    rng = np.random.default_rng(seed)
    model.eval().to(device)
    levels: list[list[np.ndarray]] = [[] for _ in range(model.config.levels)]
    label_list: list[int] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(pending)).to(device)
        for lvl, c in enumerate(model.encode(x)):
            levels[lvl].append(c.cpu().numpy().astype(np.uint16))
        pending.clear()

    for f in tqdm(files, desc="extract", dynamic_ncols=True):
        pix = pad_to(rung_pixels(load_rgb(f), scale), crop)
        h, w = pix.shape[:2]
        label = names.index(f.relative_to(data).parts[0]) if labels else -1
        for _ in range(crops_per_image):
            side = min(h, w, int(crop / rng.uniform(min_scale, 1.0))) if min_scale < 1 else crop
            y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
            patch = pix[y : y + side, x : x + side]
            if side != crop:
                t = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None]
                t = torch.nn.functional.interpolate(t, size=(crop, crop), mode="bilinear", antialias=True)
                patch = t[0].clamp(0, 1).numpy().transpose(1, 2, 0)
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            pending.append(np.ascontiguousarray(patch.transpose(2, 0, 1)))
            label_list.append(label)
            if len(pending) == batch:
                flush()
    if pending:
        flush()
    out.mkdir(parents=True, exist_ok=True)
    for lvl, chunks in enumerate(levels):
        np.save(out / f"level{lvl}.npy", np.concatenate(chunks))
    np.save(out / "labels.npy", np.array(label_list, dtype=np.int64))
    meta = {
        "source": str(data),
        "images": len(files),
        "crop": crop,
        "crops_per_image": crops_per_image,
        "flips": "random horizontal, p=0.5",
        "min_scale": min_scale,
        "scale": scale,
        "seed": seed,
        "levels": model.config.levels,
        "num_codes": model.config.num_codes,
        "classes": names,
        "model_fingerprint": fingerprint(model.state_dict()).hex(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def load_codes(folder: str | Path) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """(code maps per level, labels, meta) of a code dataset, memory-mapped."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise VQCodecError(f"{folder} is not a code dataset (no meta.json); make one with extract-codes")
    meta = json.loads(meta_path.read_text())
    maps = [np.load(folder / f"level{lvl}.npy", mmap_mode="r") for lvl in range(meta["levels"])]
    return maps, np.load(folder / "labels.npy"), meta


def load_code_sets(folders: str | Path | Sequence[str | Path]) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """One or several code datasets of one model as one (the first one's meta): the codes of several
    rungs of the quality ladder, say. One folder stays memory-mapped; several are read into memory."""
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    sets = [load_codes(f) for f in folders]
    if not sets:
        raise VQCodecError("no code dataset given")
    meta = sets[0][2]
    for folder, (_, _, other) in zip(folders[1:], sets[1:]):
        for key, what in (("model_fingerprint", "model"), ("levels", "number of levels"),
                          ("num_codes", "codebook size"), ("classes", "classes")):
            if other.get(key) != meta.get(key):
                raise VQCodecError(f"{folder} holds codes of another {what} than {folders[0]}: they cannot be pooled")
    if len(sets) == 1:
        return sets[0]
    maps = [np.concatenate([s[0][lvl] for s in sets]) for lvl in range(meta["levels"])]
    return maps, np.concatenate([s[1] for s in sets]), meta


class CodeTiles(Dataset):
    """Index i -> a random tile of level ``level`` (side ``tile >> level``), the same window of
    every level above it, and the label: what one prior sees at coding time."""

    def __init__(self, maps: list[np.ndarray], labels: np.ndarray, level: int, tile: int, seed: int) -> None:
        self.maps, self.labels, self.level, self.tile, self.seed = maps, labels, level, tile, seed
        self.top = len(maps) - 1
        self.unit = 1 << (self.top - level)  # keep windows aligned with the coarsest level
        side = tile >> level
        if side > maps[level].shape[1] or side > maps[level].shape[2]:
            raise VQCodecError(f"tile of {side} codes does not fit code maps of {maps[level].shape[1:]}")

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, index])
        n = int(rng.integers(self.maps[0].shape[0]))
        side = self.tile >> self.level
        h, w = self.maps[self.level].shape[1:]
        y = int(rng.integers((h - side) // self.unit + 1)) * self.unit
        x = int(rng.integers((w - side) // self.unit + 1)) * self.unit
        return self.window(n, y, x)

    def window(self, n: int, y: int, x: int) -> tuple[torch.Tensor, ...]:
        """The tile of map ``n`` whose top-left code (at level ``level``) is (y, x), with its context."""
        side = self.tile >> self.level
        out = []
        for lvl in range(self.level, self.top + 1):
            f = 1 << (lvl - self.level)
            s = -(-side // f)
            out.append(torch.from_numpy(self.maps[lvl][n, y // f : y // f + s, x // f : x // f + s].astype(np.int64)))
        return (*out, torch.tensor(int(self.labels[n])))


class CodeGrid(CodeTiles):
    """Every tile of every map, side by side in a grid: an exact, repeatable mean over a code dataset.

    Random tiles are right for training but a poor yardstick: per-tile NLL ranges over several bits
    between smooth and busy images, so a few hundred random tiles move the mean by a tenth of a bit.
    A map that is not a whole number of tiles gets a last row/column of tiles flush with its edge."""

    def __init__(self, maps: list[np.ndarray], labels: np.ndarray, level: int, tile: int) -> None:
        super().__init__(maps, labels, level, tile, seed=0)
        side = tile >> level
        h, w = maps[level].shape[1:]
        self.starts = [self._starts(h, side), self._starts(w, side)]

    def _starts(self, size: int, side: int) -> list[int]:
        starts = list(range(0, size - side + 1, side))
        if starts[-1] + side < size:
            starts.append((size - side) // self.unit * self.unit)
        return starts

    def __len__(self) -> int:
        return self.maps[0].shape[0] * len(self.starts[0]) * len(self.starts[1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        ys, xs = self.starts
        n, rest = divmod(index, len(ys) * len(xs))
        return self.window(n, ys[rest // len(xs)], xs[rest % len(xs)])
