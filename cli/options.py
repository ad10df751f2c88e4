"""Options several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vqcodec.errors import VQCodecError

if TYPE_CHECKING:
    from vqcodec.zoo.registry import Rung

MODEL = click.option(
    "--model", default=None, metavar="NAME|FILE",
    help="Codec model: a name from 'vqcodec models' or a codec-model file (default: the default quality's to "
         "compress; to decompress, the installed model that wrote the file).",
)


def _rung(ctx: click.Context, param: click.Parameter, value: str | None) -> Rung | None:
    """The rung ``--quality`` names, checked as the option is parsed: a bad one is a usage error
    (exit 2) before anything heavy is imported (the ladder is read from models.json, no torch)."""
    if value is None:
        return None
    from vqcodec.zoo.registry import rung_for_quality

    try:
        return rung_for_quality(value)
    except VQCodecError as err:
        raise click.BadParameter(str(err)) from None


QUALITY = click.option(
    "--quality", "-q", "rung", default=None, metavar="Q|NAME", callback=_rung,
    help="Quality 1 (smallest files) to N (best pictures) of the shipped ladder ('vqcodec models' lists it), "
         "or a rung's name; default: the default model's rung.",
)
MODEL_DIR = click.option(
    "--model-dir", "model_dirs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of codec-model files to search by name and fingerprint (repeatable; also $VQCODEC_MODELS).",
)
THREADS = click.option(
    "--threads", type=click.IntRange(min=1), default=None, metavar="N",
    help="CPU threads to compute with (default: $OMP_NUM_THREADS, else the cores free when the command "
         "starts). The output never depends on it.",
)
DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
FORCE = click.option("--force", "-f", is_flag=True,
                     help="Replace existing output files (atomically; an input is never replaced). Devices and FIFOs "
                          "such as /dev/null are written through without it.")


def prior_files(fn):
    """``--prior-top``, ``--prior-middle`` (3-level models) and ``--prior-bottom``: float prior files."""
    for level in ("bottom", "middle", "top"):
        extra = " (3-level models only)" if level == "middle" else ""
        fn = click.option(f"--prior-{level}", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          default=None, help=f"The {level} level's prior (model.safetensors of its run){extra}.")(fn)
    return fn


def priors_by_level(prior_top: Path | None, prior_middle: Path | None, prior_bottom: Path | None) -> dict:
    """{level name: file} of the priors given."""
    return {name: p for name, p in (("top", prior_top), ("middle", prior_middle), ("bottom", prior_bottom)) if p}


def use_threads(requested: int | None) -> int:
    """Set torch's thread count as ``vqcodec.threads.choose_threads`` decides; returns it."""
    import torch

    from vqcodec.threads import choose_threads

    threads = choose_threads(requested)
    torch.set_num_threads(threads)
    return threads
