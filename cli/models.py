"""``vqcodec models``: the quality ladder, and the codec models vqcodec can find, by name and fingerprint."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import MODEL_DIR


def _kodak(figures: dict | None) -> str:
    return f"{figures['bpp']:.3f} / {figures['psnr']:.2f} dB" if figures else "-"


def _size(n: int | None) -> str:
    """Bytes for people: '1.1 kB', '12.3 MB' ('?' when unknown)."""
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _echo_ladder(rungs: list, default: int) -> None:
    """A ladder as a table: quality (the default one starred), rung name, model, scale, Kodak figures."""
    head = f"{'quality':<9}{'name':<22}{'model':<14}{'scale':>6}  Kodak bpp / PSNR"
    click.echo(head)
    click.echo("-" * len(head))
    for r in rungs:
        quality = f"{r.quality}" + ("*" if r.quality == default else "")
        click.echo(f"{quality:<9}{r.name:<22}{r.model:<14}{r.scale:>6g}  {_kodak(r.kodak)}")


@main.command()
@click.option("--all", "show_all", is_flag=True,
              help="Also list the legacy shipped models: off the ladder, kept only so that the files they wrote "
                   "still decode.")
@MODEL_DIR
@friendly_errors
def models(show_all: bool, model_dirs: tuple[Path, ...]) -> None:
    """List the quality ladder, then the codec models it uses and your own: name, fingerprint, levels,
    sizes, Kodak figures, description.

    \b
    A rung of the ladder is a shipped model coding images at a scale of their size; pick one with
    'vqcodec compress --quality Q|NAME'. Shipped models come with vqcodec; add your own by putting
    codec-model files (vqcodec export) in a folder named by $VQCODEC_MODELS or --model-dir. Use a
    model's name with --model. 'file' is a file's size; 'model' the size of the whole model it
    stands for: a delta file stores only what differs from its base model, which it needs installed.
    """
    from vqcodec.zoo.registry import default_model_name, default_quality, ladder, list_models, model_bytes

    default = default_quality()
    rungs, fast = ladder(), ladder("fast")
    _echo_ladder(rungs, default)
    click.echo("* the default quality.")
    if fast:
        click.echo("")
        click.echo("The fast ladder ('compress --fast -q Q'): multi-pass priors, nearly the same pictures in")
        click.echo("about a third of the decode time for about 5 % more bits on Kodak (docs/models.md).")
        _echo_ladder(fast, default)
    click.echo("")
    entries = list_models(model_dirs)
    in_use = {r.model for r in rungs + fast} | {default_model_name()}
    shown = [e for e in entries if show_all or not e.shipped or e.name in in_use]
    head = (f"{'name':<14}{'fingerprint':<34}{'levels':>6}{'file':>10}{'model':>10}  {'Kodak bpp / PSNR':<18}"
            "description")
    click.echo(head)
    click.echo("-" * len(head))
    for e in shown:
        where = "" if e.shipped else f" [{e.path}]"
        click.echo(f"{e.name:<14}{e.fingerprint:<34}{e.levels:>6}{_size(e.size):>10}"
                   f"{_size(model_bytes(e, entries)):>10}  {_kodak(e.kodak):<18}{e.description}{where}")
    legacy = len(entries) - len(shown)
    if legacy:
        click.echo(f"{legacy} legacy models (kept only so that the files they wrote decode) are not listed; "
                   "'vqcodec models --all' lists them.")
