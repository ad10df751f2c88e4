"""``vqcodec export``: trained VQ-VAE + priors -> one codec model file with integer priors."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .main import friendly_errors, main
from .options import FORCE, prior_files, priors_by_level

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.option("--vqvae", type=FILE, default=None,
              help="Stage-1 model.safetensors (needed unless --refit-of gives it).")
@prior_files
@click.option("--prior", "priors", type=FILE, multiple=True, hidden=True,
              help="Old form: prior files bottom level first (use --prior-top/--prior-middle/--prior-bottom).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="Code dataset (extract-codes) whose tiles calibrate the integer activations; repeat it to "
                   "pool several.")
@click.option("--refit-of", default=None, metavar="NAME|FILE",
              help="The codec model a 'train vqvae --refit' or 'train prior --refit' run started from: what "
                   "is not given (the VQ-VAE, the prior of a level) is that model's, its integer priors as they "
                   "are; new priors need --calibration.")
@click.option("--delta", is_flag=True,
              help="With --refit-of: store only the tensors that differ from that model (its decoder), a third "
                   "of the size; the file then loads only where that model is installed.")
@click.option("--wavefront-attention", is_flag=True,
              help="With --refit-of: limit the attention of that model's priors to the wavefront of their "
                   "reach, their integer weights unchanged: the top level decodes in about half the steps.")
@click.option("--tiles", type=int, default=128, show_default=True, help="Calibration tiles per prior.")
@click.option("--tile", type=int, default=None,
              help="The new model's default tile side in bottom codes (by default the --refit-of model's, or "
                   "what a new model's priors were trained on); multi-pass priors work with any.")
@click.option("--act-bits", type=click.Choice(["8", "16"]), default=None,
              help="Integer width of the new multi-pass priors: 8 computes in exact float32 (faster, about "
                   "0.2 % more bits), 16 in float64 (default: the training run's, 16).")
@click.option("--name", default=None, help="Model name recorded in the file (default: output file stem).")
@click.option("--description", default="", help="One line for 'vqcodec models'.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@FORCE
@friendly_errors
def export(vqvae: Path | None, prior_top: Path | None, prior_middle: Path | None, prior_bottom: Path | None,
           priors: tuple[Path, ...], calibration: tuple[Path, ...], refit_of: str | None, delta: bool,
           wavefront_attention: bool, tiles: int, tile: int | None, act_bits: str | None, name: str | None,
           description: str, out: Path, force: bool) -> None:
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
    bits = int(act_bits) if act_bits is not None else None
    if bits is not None and not (prior_top or prior_middle or prior_bottom or priors):
        raise VQCodecError("--act-bits sets the width of new priors: give them (--prior-top, --prior-bottom)")
    if refit_of is not None:
        if priors:
            raise VQCodecError("with --refit-of give new priors as --prior-top/--prior-middle/--prior-bottom")
        base = resolve_model(refit_of)
        levels = level_numbers(base, priors_by_level(prior_top, prior_middle, prior_bottom))
        if vqvae is None and not levels and not wavefront_attention:
            raise VQCodecError("--refit-of needs what changed: a --vqvae, a prior (--prior-top, --prior-bottom) "
                               "or --wavefront-attention")
        if calibration and not levels:
            raise VQCodecError("--calibration quantizes new priors; with --refit-of alone the priors are reused")
        model = build_refit_codec_model(base, vqvae, out, name or out.stem, description, delta, levels,
                                        calibration or None, tiles, wavefront_attention, tile, bits)
        click.echo(f"{out}: model '{model.name}', fingerprint {model.fingerprint.hex()}, tile {model.tile}")
        return
    if delta:
        raise VQCodecError("--delta stores a --refit-of model's differences: give --refit-of")
    if wavefront_attention:
        raise VQCodecError("--wavefront-attention changes a --refit-of model's priors: give --refit-of")
    if vqvae is None:
        raise VQCodecError("--vqvae is needed (the stage-1 model the priors were trained on)")
    if not calibration:
        raise VQCodecError("--calibration is needed to quantize the priors")
    by_level = priors_by_level(prior_top, prior_middle, prior_bottom)
    if by_level and priors:
        raise VQCodecError("give the priors as --prior-top/--prior-middle/--prior-bottom, not also as --prior")
    files = list(priors) or [by_level[n] for n in ("bottom", "middle", "top") if n in by_level]
    if not files:
        raise VQCodecError("no priors given: pass --prior-top and --prior-bottom (and --prior-middle for 3 levels)")
    model = build_codec_model(vqvae, files, calibration, out, name or out.stem, calibration_tiles=tiles,
                              description=description, act_bits=bits, tile=tile)
    click.echo(f"{out}: model '{model.name}', fingerprint {model.fingerprint.hex()}, tile {model.tile}")


def level_numbers(model: Path, by_name: dict[str, Path]) -> dict[int, Path]:
    """Prior files by level number (0 = bottom) of ``model``, from --prior-top/--prior-bottom/..."""
    from vqcodec.errors import VQCodecError
    from vqcodec.vqvae import LEVEL_NAMES
    from vqcodec.zoo.registry import read_metadata

    levels = json.loads(read_metadata(model)["config"])["vqvae"]["levels"]
    names = LEVEL_NAMES[levels]
    unknown = [n for n in by_name if n not in names]
    if unknown:
        raise VQCodecError(f"{model.name} has no {unknown[0]} level (its levels: {', '.join(names)})")
    return {names.index(n): p for n, p in by_name.items()}
