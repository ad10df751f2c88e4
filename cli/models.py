"""``vqcodec models``: the quality ladder, and the codec models vqcodec can find, by name and fingerprint."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import MODEL_DIR


def _kodak(figures: dict | None) -> str:
    return f"{figures['bpp']:.3f} / {figures['psnr']:.2f} dB" if figures else "-"


@main.command()
@MODEL_DIR
@friendly_errors
def models(model_dirs: tuple[Path, ...]) -> None:
    """List the quality ladder, then the installed codec models: name, fingerprint, levels, size,
    Kodak figures, description.

    \b
    A rung of the ladder is a shipped model coding images at a scale of their size; pick one with
    'vqcodec compress --quality Q|NAME'. Shipped models come with vqcodec; add your own by putting
    codec-model files (vqcodec export) in a folder named by $VQCODEC_MODELS or --model-dir. Use a
    model's name with --model.
    """
    from vqcodec.zoo.registry import default_quality, ladder, list_models

    default = default_quality()
    head = f"{'quality':<9}{'name':<22}{'model':<14}{'scale':>6}  Kodak bpp / PSNR"
    click.echo(head)
    click.echo("-" * len(head))
    for r in ladder():
        quality = f"{r.quality}" + ("*" if r.quality == default else "")
        click.echo(f"{quality:<9}{r.name:<22}{r.model:<14}{r.scale:>6g}  {_kodak(r.kodak)}")
    click.echo("* the default quality.")
    click.echo("")
    head = f"{'name':<14}{'fingerprint':<34}{'levels':>6}{'size':>9}  {'Kodak bpp / PSNR':<18}description"
    click.echo(head)
    click.echo("-" * len(head))
    for e in list_models(model_dirs):
        where = "" if e.shipped else f" [{e.path}]"
        click.echo(f"{e.name:<14}{e.fingerprint:<34}{e.levels:>6}{e.size / 1e6:>7.1f}MB  {_kodak(e.kodak):<18}"
                   f"{e.description}{where}")
