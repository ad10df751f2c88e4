"""``vqcodec export``: trained VQ-VAE + priors -> one codec model file with integer priors."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import FORCE, prior_files, priors_by_level

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.option("--vqvae", type=FILE, required=True, help="Stage-1 model.safetensors.")
@prior_files
@click.option("--prior", "priors", type=FILE, multiple=True, hidden=True,
              help="Old form: prior files bottom level first (use --prior-top/--prior-middle/--prior-bottom).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Code dataset (extract-codes) whose tiles calibrate the integer activations.")
@click.option("--refit-of", default=None, metavar="NAME|FILE",
              help="The codec model a 'train vqvae --refit' run started from: its integer priors are reused "
                   "as they are (no priors or calibration to give).")
@click.option("--delta", is_flag=True,
              help="With --refit-of: store only the tensors that differ from that model (its decoder), a third "
                   "of the size; the file then loads only where that model is installed.")
@click.option("--tiles", type=int, default=128, show_default=True, help="Calibration tiles per prior.")
@click.option("--name", default=None, help="Model name recorded in the file (default: output file stem).")
@click.option("--description", default="", help="One line for 'vqcodec models'.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@FORCE
@friendly_errors
def export(vqvae: Path, prior_top: Path | None, prior_middle: Path | None, prior_bottom: Path | None,
           priors: tuple[Path, ...], calibration: Path | None, refit_of: str | None, delta: bool, tiles: int,
           name: str | None, description: str, out: Path, force: bool) -> None:
    """Quantize the priors to integer networks and write a codec model for compress/decompress.

    \b
    vqcodec export --vqvae runs/vqvae/model.safetensors --prior-top runs/top/model.safetensors \\
        --prior-bottom runs/bottom/model.safetensors --calibration runs/codes --out my-model.safetensors
    
    vqcodec export --refit-of default --vqvae runs/refit/model.safetensors --out my-model.safetensors
    """
    from vqcodec.errors import VQCodecError
    from vqcodec.train.export import build_codec_model, build_refit_codec_model
    from vqcodec.zoo.registry import resolve_model

    if out.exists() and not force:
        raise VQCodecError(f"{out} exists; use --force to overwrite")
    if refit_of is not None:
        if priors or prior_top or prior_middle or prior_bottom or calibration:
            raise VQCodecError("--refit-of reuses that model's priors: give no priors and no --calibration")
        model = build_refit_codec_model(resolve_model(refit_of), vqvae, out, name or out.stem, description, delta)
        click.echo(f"{out}: model '{model.name}', fingerprint {model.fingerprint.hex()}, tile {model.tile}")
        return
    if delta:
        raise VQCodecError("--delta stores a --refit-of model's differences: give --refit-of")
    if calibration is None:
        raise VQCodecError("--calibration is needed to quantize the priors")
    by_level = priors_by_level(prior_top, prior_middle, prior_bottom)
    if by_level and priors:
        raise VQCodecError("give the priors as --prior-top/--prior-middle/--prior-bottom, not also as --prior")
    files = list(priors) or [by_level[n] for n in ("bottom", "middle", "top") if n in by_level]
    if not files:
        raise VQCodecError("no priors given: pass --prior-top and --prior-bottom (and --prior-middle for 3 levels)")
    model = build_codec_model(vqvae, files, calibration, out, name or out.stem, calibration_tiles=tiles,
                              description=description)
    click.echo(f"{out}: model '{model.name}', fingerprint {model.fingerprint.hex()}, tile {model.tile}")
