"""``vqcodec eval``: the numbers of the paper's Table 1 (computed by ``vqcodec.train.evaluation``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .main import friendly_errors, main
from .options import DEVICE, prior_files, priors_by_level

FOLDER = dict(type=click.Path(exists=True, file_okay=False, path_type=Path))


@main.command("eval")
@click.option("--vqvae", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Stage-1 model (model.safetensors of a vqvae run).")
@prior_files
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
@DEVICE
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
    from vqcodec.errors import VQCodecError
    from vqcodec.train.evaluation import check_code_datasets, evaluate_priors, evaluate_vqvae, format_table
    from vqcodec.zoo.files import load_vqvae

    if (data is None) != (val is None):
        raise VQCodecError("--data and --val go together")
    if (tiles is not None and tiles < 1) or images < 1:
        raise VQCodecError("--tiles and --images must be at least 1")
    folders = [f for f in (codes, val_codes, holdout_codes) if f is not None]
    for warning in check_code_datasets(load_vqvae(vqvae), folders):
        click.echo(f"vqcodec: warning: {warning} than {vqvae}", err=True)
    priors = evaluate_priors(priors_by_level(prior_top, prior_middle, prior_bottom), codes, val_codes, tiles, device,
                             holdout_codes=holdout_codes)
    vq = evaluate_vqvae(vqvae, data, val, images, device) if data is not None else None
    click.echo(format_table(priors, vq))
    if json_path is not None:
        payload = {"priors": priors, "vqvae": vq, "vqvae_path": str(vqvae), "codes": str(codes),
                   "val_codes": str(val_codes), "holdout_codes": str(holdout_codes) if holdout_codes else None}
        atomic_write_bytes(json_path, (json.dumps(payload, indent=2) + "\n").encode(), force=True)
        click.echo(f"numbers -> {json_path}")
