"""Options several commands share, declared once."""

from __future__ import annotations

from pathlib import Path

import click

MODEL = click.option(
    "--model", default=None, metavar="NAME|FILE",
    help="Codec model: a name from 'vqcodec models' or a codec-model file (default: the default quality's to "
         "compress; to decompress, the installed model that wrote the file).",
)
QUALITY = click.option(
    "--quality", "-q", default=None, metavar="Q|NAME",
    help="Quality 1 (smallest files) to N (best pictures) of the shipped ladder ('vqcodec models' lists it), "
         "or a rung's name; default: the default model's rung.",
)
MODEL_DIR = click.option(
    "--model-dir", "model_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
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
