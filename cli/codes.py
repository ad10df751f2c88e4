"""``vqcodec extract-codes``: encode a folder once into a code dataset for prior training."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import DEVICE


@main.command("extract-codes")
@click.option("--vqvae", "--model", "vqvae", required=True, metavar="FILE|NAME",
              help="Stage-1 model: model.safetensors of a vqvae run, or a codec model (file or name) whose "
                   "codes a prior is to learn; --model is the old name.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--crop", type=int, default=256, show_default=True, help="Crop side in pixels.")
@click.option("--crops", type=int, default=8, show_default=True, help="Random crops per image.")
@click.option("--labels", is_flag=True, help="Sub-folders are classes (for class-conditional priors).")
@click.option("--min-scale", type=float, default=1.0, show_default=True,
              help="Random zoom-out: each crop covers crop/s pixels, s in [min-scale, 1], resized to crop.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Resize each whole image as a quality-ladder rung at this scale does, before cropping.")
@click.option("--seed", type=int, default=0, show_default=True)
@DEVICE
@friendly_errors
def extract_codes_cmd(vqvae: str, data: Path, out: Path, crop: int, crops: int, labels: bool, min_scale: float,
                      scale: float, seed: int, device: str) -> None:
    """Encode random crops of every image into code maps (numpy files, no pickle)."""
    from vqcodec.train.code_datasets import extract_codes
    from vqcodec.zoo.files import load_vqvae
    from vqcodec.zoo.registry import resolve_model

    meta = extract_codes(load_vqvae(resolve_model(vqvae)), data, out, crop=crop, crops_per_image=crops, seed=seed,
                         labels=labels, device=device, min_scale=min_scale, scale=scale)
    click.echo(f"{meta['images']} images x {crops} crops -> {out}")
