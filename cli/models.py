"""``vqcodec models``: the codec models vqcodec can find, by name and fingerprint."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import MODEL_DIR


@main.command()
@MODEL_DIR
@friendly_errors
def models(model_dirs: tuple[Path, ...]) -> None:
    """List the installed codec models: name, fingerprint, levels, size, Kodak figures, description.

    \b
    Shipped models come with vqcodec; add your own by putting codec-model files (vqcodec export)
    in a folder named by $VQCODEC_MODELS or --model-dir. Use a name with --model.
    """
    from vqcodec.zoo.registry import default_model_name, list_models

    entries = list_models(model_dirs)
    entries.sort(key=lambda e: (e.quality is None, e.quality or 0))  # the ladder first, smallest files first
    default = default_model_name()
    head = (f"{'quality':<9}{'name':<14}{'fingerprint':<34}{'levels':>6}{'size':>9}  {'Kodak bpp / PSNR':<18}"
            "description")
    click.echo(head)
    click.echo("-" * len(head))
    for e in entries:
        kodak = f"{e.kodak['bpp']:.3f} / {e.kodak['psnr']:.2f} dB" if e.kodak else "-"
        where = "" if e.shipped else f" [{e.path}]"
        quality = "-" if e.quality is None else f"{e.quality}" + ("*" if e.name == default else "")
        click.echo(f"{quality:<9}{e.name:<14}{e.fingerprint:<34}{e.levels:>6}{e.size / 1e6:>7.1f}MB  {kodak:<18}"
                   f"{e.description}{where}")
    click.echo("* the default quality; pick another with 'vqcodec compress --quality Q'. Quality '-': not on the "
               "ladder (kept so the files it wrote still decode).")
