"""Evaluation: the numbers of the paper's Table 1 and the stage-1 reconstruction quality.

For each level: the float prior's NLL in bits per code on train and validation code tiles (the
prior's own tile size), the train/validation gap, log2(K) (a uniform coder), the entropy of the
empirical code histogram (a context-free coder) and the NLL as a share of it; for the VQ-VAE the
train and validation MSE and PSNR on whole images. ``vqcodec eval`` and the benchmarks use these.

With held-out codes (training-distribution images the prior never saw) the table also shows the
train/held-out gap. It tells overfitting (the prior memorised its training images: the held-out gap
is large too) from a validation set that differs from the training set (only the validation gap is
large).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqcodec.errors import VQCodecError
from vqcodec.imageio import list_images
from vqcodec.priors.pixelcnn import nll_bits
from vqcodec.resample import coded_size, resize
from vqcodec.train.code_datasets import CodeGrid, CodeTiles, load_codes
from vqcodec.train.crops import load_rgb
from vqcodec.train.loop import to_device
from vqcodec.vqvae import LEVEL_NAMES, VQVAE
from vqcodec.zoo.files import load_prior, load_vqvae


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of [0, 1] images."""
    return 10 * math.log10(1 / max(mse, 1e-12))


def prior_inputs(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Logits for a batch (codes, cond..., label) from CodeTiles."""
    codes, *cond, label = batch
    cfg = (model.module if hasattr(model, "module") else model).config
    return model(codes, cond or None, label if cfg.num_classes else None)


@torch.no_grad()
def mean_bits(model: torch.nn.Module, dataset: CodeTiles, count: int | None = None, batch: int = 32) -> float:
    """Mean NLL in bits per code over the first ``count`` tiles of ``dataset`` (all of a CodeGrid by default)."""
    count = len(dataset) if count is None else count
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, count, batch):
        items = [dataset[i] for i in range(start, min(count, start + batch))]
        stacked = to_device(tuple(torch.stack(t) for t in zip(*items)), device)
        total += float(nll_bits(prior_inputs(model, stacked), stacked[0])) * len(items)
    return total / count


def code_bits(model: torch.nn.Module, maps: list[np.ndarray], labels: np.ndarray, level: int, tile: int,
              tiles: int | None = None, seed: int = 999_999) -> float:
    """Mean NLL in bits per code of a code dataset's level: exact over every tile of every map
    (``tiles`` None), or over ``tiles`` random tiles (quicker, noisier)."""
    dataset = CodeGrid(maps, labels, level, tile) if tiles is None else CodeTiles(maps, labels, level, tile, seed)
    return mean_bits(model, dataset, tiles)


def unigram_entropy(codes: np.ndarray, num_codes: int) -> float:
    """Entropy in bits of the empirical code histogram: what a context-free coder would spend."""
    counts = np.bincount(np.asarray(codes).reshape(-1), minlength=num_codes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


@torch.no_grad()
def coded_image(model: VQVAE, path: Path, device: torch.device | str = "cpu",
                scale: float = 1.0) -> tuple[list[torch.Tensor], float, int]:
    """(codes, MSE of the 8-bit reconstruction, pixels) of one whole image coded at ``scale`` times its
    size and resized back, as a rung of the quality ladder codes it (``vqcodec.resample``)."""
    x = torch.from_numpy(load_rgb(path).transpose(2, 0, 1).copy())[None].to(device)
    h, w = x.shape[2:]
    coded = resize(x, *coded_size(w, h, scale))
    codes = model.encode(coded)
    recon = model.resize_back(model.decode(codes, coded.shape[2], coded.shape[3]), w, h).clamp(0, 1)
    return codes, float(F.mse_loss((recon * 255).round() / 255, x)), h * w


@torch.no_grad()
def evaluate_images(
    model: VQVAE, files: list[Path], device: torch.device | str = "cpu", scale: float = 1.0
) -> dict[str, float]:
    """Mean per-image PSNR, MSE, and codebook usage per level over whole images, coded at ``scale``
    times their size and resized back as a rung of the quality ladder does (``vqcodec.resample``)."""
    k = model.config.num_codes
    counts = [torch.zeros(k, dtype=torch.long) for _ in range(model.config.levels)]
    psnrs, mses = [], []
    for f in files:
        codes, mse, _ = coded_image(model, f, device, scale)
        mses.append(mse)
        psnrs.append(psnr_from_mse(mse))
        for lvl, c in enumerate(codes):
            counts[lvl] += torch.bincount(c.reshape(-1).cpu(), minlength=k)
    result = {"psnr": sum(psnrs) / len(psnrs), "mse": sum(mses) / len(mses)}
    for lvl, cnt in enumerate(counts):
        p = cnt.double() / cnt.sum()
        nz = p[p > 0]
        result[f"used{lvl}"] = int((cnt > 0).sum())
        result[f"perplexity{lvl}"] = float(torch.exp(-(nz * nz.log()).sum()))
    return result


def evaluate_priors(priors: dict[str, Path], codes: Path, val_codes: Path, tiles: int | None, device: str = "cpu",
                    seed: int = 999_999, holdout_codes: Path | None = None) -> dict[str, dict]:
    """Per level name (top first): the prior numbers of Table 1, over every tile of every code map
    (``tiles`` None) or over ``tiles`` random tiles per code dataset."""

    maps, labels, meta = load_codes(codes)
    vmaps, vlabels, vmeta = load_codes(val_codes)
    held = load_codes(holdout_codes) if holdout_codes is not None else None
    levels = meta["levels"]
    for other in (vmeta, held[2]) if held else (vmeta,):
        if other["levels"] != levels or other["num_codes"] != meta["num_codes"]:
            raise VQCodecError("the code datasets come from different models (levels or codebook size differ)")
    names = LEVEL_NAMES[levels]
    missing = [n for n in names if priors.get(n) is None]
    if missing:
        raise VQCodecError(f"a {levels}-level code dataset needs --prior-{' --prior-'.join(missing)}")
    extra = [n for n in priors if priors[n] is not None and n not in names]
    if extra:
        raise VQCodecError(f"a {levels}-level code dataset has no '{extra[0]}' level")
    k = meta["num_codes"]
    results: dict[str, dict] = {}
    for level in reversed(range(levels)):
        name = names[level]
        prior, cfg = load_prior(priors[name])
        if cfg.get("level") != level:
            raise VQCodecError(f"{priors[name]} is the prior of level {cfg.get('level')}, not of the {name} level")
        if prior.config.num_codes != k:
            raise VQCodecError(f"{priors[name]} has {prior.config.num_codes} codes, the code dataset {k}")
        prior.to(device).eval()
        tile = int(cfg.get("tile", 32))
        with torch.no_grad():
            train_bits = code_bits(prior, maps, labels, level, tile, tiles, seed)
            val_bits = code_bits(prior, vmaps, vlabels, level, tile, tiles, seed)
            held_bits = code_bits(prior, held[0], held[1], level, tile, tiles, seed) if held else None
        h_train, h_val = unigram_entropy(maps[level], k), unigram_entropy(vmaps[level], k)
        results[name] = {
            "level": level,
            "num_codes": k,
            "tile": tile >> level,
            "tiles": tiles if tiles is not None else "all",
            "train_bits": train_bits,
            "val_bits": val_bits,
            "gap_percent": gap_percent(train_bits, val_bits),
            "log2_k": math.log2(k),
            "unigram_train": h_train,
            "unigram_val": h_val,
            "nll_percent_of_unigram": 100 * val_bits / h_val if h_val > 0 else math.nan,
        }
        if held_bits is not None:
            results[name].update(holdout_bits=held_bits, holdout_gap_percent=gap_percent(train_bits, held_bits))
    return results


def gap_percent(train_bits: float, other_bits: float) -> float:
    """How much worse, in percent, the prior codes unseen data than its training data."""
    return 100 * (other_bits - train_bits) / train_bits if train_bits > 0 else math.nan


def evaluate_vqvae(path: Path, data: Path, val: Path, images: int, device: str = "cpu") -> dict[str, float]:
    """Train and validation MSE / PSNR of the VQ-VAE on the first ``images`` whole images of each folder."""

    model = load_vqvae(path).to(device)
    train = evaluate_images(model, list_images(data)[:images], device)
    valid = evaluate_images(model, list_images(val)[:images], device)
    return {"train_mse": train["mse"], "val_mse": valid["mse"], "train_psnr": train["psnr"],
            "val_psnr": valid["psnr"], "images": images}


def format_table(priors: dict[str, dict], vqvae: dict | None) -> str:
    head = (f"{'level':<8}{'K':>6}{'log2 K':>8}{'H train':>9}{'H val':>8}{'NLL train':>11}{'NLL val':>9}"
            f"{'gap %':>8}{'NLL/H val %':>13}")
    held = all("holdout_bits" in r for r in priors.values())
    if held:
        head += f"{'NLL held-out':>14}{'gap held-out %':>16}"
    lines = ["Priors (bits per code; H = entropy of the code histogram)", head, "-" * len(head)]
    for name, r in priors.items():
        lines.append(f"{name:<8}{r['num_codes']:>6}{r['log2_k']:>8.3f}{r['unigram_train']:>9.3f}"
                     f"{r['unigram_val']:>8.3f}{r['train_bits']:>11.3f}{r['val_bits']:>9.3f}"
                     f"{r['gap_percent']:>8.2f}{r['nll_percent_of_unigram']:>13.1f}"
                     + (f"{r['holdout_bits']:>14.3f}{r['holdout_gap_percent']:>16.2f}" if held else ""))
    if vqvae is not None:
        lines += ["", f"VQ-VAE on whole images (first {vqvae['images']} of each folder)",
                  f"{'':<8}{'MSE':>12}{'PSNR dB':>10}", "-" * 30,
                  f"{'train':<8}{vqvae['train_mse']:>12.6f}{vqvae['train_psnr']:>10.2f}",
                  f"{'val':<8}{vqvae['val_mse']:>12.6f}{vqvae['val_psnr']:>10.2f}"]
    return "\n".join(lines)




def check_code_datasets(vqvae: VQVAE, folders: list[Path]) -> list[str]:
    """Refuse code datasets of another model shape; return a warning for each one extracted with
    a different VQ-VAE of the same shape."""
    from vqcodec.zoo.files import fingerprint

    warnings = []
    own = fingerprint(vqvae.state_dict()).hex()
    for folder in folders:
        meta = load_codes(folder)[2]
        if meta.get("num_codes") != vqvae.config.num_codes or meta.get("levels") != vqvae.config.levels:
            raise VQCodecError(f"{folder} was not made by a model shaped like this VQ-VAE (levels or codebook size)")
        made_by = meta.get("model_fingerprint")
        if made_by and made_by != own:
            warnings.append(f"{folder} was extracted with a different VQ-VAE")
    return warnings
