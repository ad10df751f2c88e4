"""``vqcodec export``: trained VQ-VAE + priors -> one codec model file with integer priors."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import friendly_errors, main

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.option("--vqvae", type=FILE, required=True, help="Stage-1 model.safetensors.")
@click.option("--prior", "priors", type=FILE, multiple=True, required=True,
              help="Prior model files, bottom level first (repeat: bottom, [middle,] top).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Code dataset (extract-codes) whose tiles calibrate the integer activations.")
@click.option("--tiles", type=int, default=128, show_default=True, help="Calibration tiles per prior.")
@click.option("--name", default=None, help="Model name recorded in the file (default: output file stem).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@friendly_errors
def export(vqvae: Path, priors: tuple[Path, ...], calibration: Path, tiles: int, name: str | None, out: Path) -> None:
    """Quantize the priors to integer networks and write a codec model for compress/decompress."""
    from vqcodec.bundle import build_codec_model

    model = build_codec_model(vqvae, list(priors), calibration, out, name or out.stem, calibration_tiles=tiles)
    click.echo(f"{out}: model '{model.name}', fingerprint {model.fingerprint.hex()}, tile {model.tile}")
