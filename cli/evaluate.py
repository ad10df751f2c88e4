"""``vqcodec eval``: the numbers of the paper's Table 1 for a trained VQ-VAE and its priors.

For each level: the float prior's NLL in bits per code on train and validation code tiles (the
prior's own tile size), the train/validation gap, log2(K) (a uniform coder), the entropy of the
empirical code histogram (a context-free coder) and the NLL as a share of it; for the VQ-VAE the
train and validation MSE and PSNR on whole images.

With ``--holdout-codes`` (codes of training-distribution images the prior never saw) the table
also shows the train/held-out gap. It tells overfitting (the prior memorised its training images:
the held-out gap is large too) from a validation set that differs from the training set (only the
validation gap is large).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from cli.main import friendly_errors, main

PRIOR = dict(type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
FOLDER = dict(type=click.Path(exists=True, file_okay=False, path_type=Path))


def evaluate_priors(priors: dict[str, Path], codes: Path, val_codes: Path, tiles: int | None, device: str = "cpu",
                    seed: int = 999_999, holdout_codes: Path | None = None) -> dict[str, dict]:
    """Per level name (top first): the prior numbers of Table 1, over every tile of every code map
    (``tiles`` None) or over ``tiles`` random tiles per code dataset."""
    import torch

    from vqcodec.codes import load_codes
    from vqcodec.errors import VQCodecError
    from vqcodec.models import load_prior
    from vqcodec.train_prior import LEVEL_NAMES, code_bits, unigram_entropy

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
    from vqcodec.data import list_images
    from vqcodec.models import load_vqvae
    from vqcodec.train_vqvae import evaluate_images

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


@main.command("eval")
@click.option("--vqvae", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Stage-1 model (model.safetensors of a vqvae run).")
@click.option("--prior-top", **PRIOR, required=True)
@click.option("--prior-middle", **PRIOR, help="3-level models only.")
@click.option("--prior-bottom", **PRIOR, required=True)
@click.option("--codes", **FOLDER, required=True, help="Training code dataset (extract-codes).")
@click.option("--val-codes", **FOLDER, required=True, help="Validation code dataset.")
@click.option("--holdout-codes", **FOLDER, default=None,
              help="Codes of training-distribution images left out of prior training (overfitting check).")
@click.option("--data", **FOLDER, default=None, help="Training images (for the VQ-VAE's MSE).")
@click.option("--val", **FOLDER, default=None, help="Validation images (for the VQ-VAE's MSE).")
@click.option("--images", type=int, default=16, show_default=True, help="Whole images per folder for the MSE.")
@click.option("--tiles", type=int, default=None,
              help="Random code tiles per set for the NLL (quicker, noisier). Default: every tile of every map.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the numbers to this JSON file.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@friendly_errors
def eval_cmd(vqvae: Path, prior_top: Path, prior_middle: Path | None, prior_bottom: Path, codes: Path,
             val_codes: Path, holdout_codes: Path | None, data: Path | None, val: Path | None, images: int,
             tiles: int | None, json_path: Path | None, device: str) -> None:
    """Table 1 of VQ-VAE-2: prior NLL (train/val), VQ-VAE MSE (train/val).

    \b
    vqcodec eval --vqvae runs/vq/model.safetensors --prior-top runs/top/model.safetensors \\
        --prior-bottom runs/bottom/model.safetensors --codes codes/train --val-codes codes/val \\
        --data images/train --val images/val --json table1.json
    """
    from vqcodec.atomic import atomic_write_bytes
    from vqcodec.checkpoint import fingerprint
    from vqcodec.codes import load_codes
    from vqcodec.errors import VQCodecError
    from vqcodec.models import load_vqvae

    if (data is None) != (val is None):
        raise VQCodecError("--data and --val go together")
    if (tiles is not None and tiles < 1) or images < 1:
        raise VQCodecError("--tiles and --images must be at least 1")
    model = load_vqvae(vqvae)
    for folder in (f for f in (codes, val_codes, holdout_codes) if f is not None):
        meta = load_codes(folder)[2]
        if meta.get("num_codes") != model.config.num_codes or meta.get("levels") != model.config.levels:
            raise VQCodecError(f"{folder} was not made by a model shaped like {vqvae} (levels or codebook size)")
        made_by = meta.get("model_fingerprint")
        if made_by and made_by != fingerprint(model.state_dict()).hex():
            click.echo(f"vqcodec: warning: {folder} was extracted with a different VQ-VAE than {vqvae}", err=True)
    priors = evaluate_priors({"top": prior_top, "middle": prior_middle, "bottom": prior_bottom}, codes, val_codes,
                             tiles, device, holdout_codes=holdout_codes)
    vq = evaluate_vqvae(vqvae, data, val, images, device) if data is not None else None
    click.echo(format_table(priors, vq))
    if json_path is not None:
        payload = {"priors": priors, "vqvae": vq, "vqvae_path": str(vqvae), "codes": str(codes),
                   "val_codes": str(val_codes), "holdout_codes": str(holdout_codes) if holdout_codes else None}
        atomic_write_bytes(json_path, (json.dumps(payload, indent=2) + "\n").encode(), force=True)
        click.echo(f"numbers -> {json_path}")
