"""``vqcodec train vqvae`` and ``vqcodec train prior``."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import DEVICE


@main.group()
def train() -> None:
    """Train the stage-1 VQ-VAE or a stage-2 prior."""


def common_options(fn):
    """Options every training command shares."""
    opts = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Run folder: model.safetensors, state.safetensors, log.jsonl."),
        click.option("--steps", type=int, default=20000, show_default=True),
        click.option("--batch", type=int, default=16, show_default=True, help="Global batch size."),
        click.option("--lr", type=float, default=3e-4, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--checkpoint-every", type=int, default=1000, show_default=True),
        click.option("--validate-every", type=int, default=1000, show_default=True),
        click.option("--workers", type=int, default=1, show_default=True, help="Data loader processes."),
        click.option("--max-minutes", type=float, default=None, help="Stop (and checkpoint) after this long."),
        click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."),
        click.option("--stop-at", type=int, default=None, hidden=False,
                     help="end after this step as if interrupted (for testing resume)"),
        DEVICE,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def settings_from(kw: dict):
    from vqcodec.train.loop import TrainSettings

    names = ["out", "steps", "batch", "lr", "seed", "checkpoint_every", "validate_every", "workers",
             "max_minutes", "resume", "device", "stop_at"]
    return TrainSettings(**{n: kw.pop(n) for n in names})


@train.command("vqvae")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--val", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--crop", type=int, default=64, show_default=True)
@click.option("--hidden", type=int, default=128, show_default=True)
@click.option("--res-channels", type=int, default=64, show_default=True)
@click.option("--res-blocks", type=int, default=2, show_default=True)
@click.option("--codes", "num_codes", type=int, default=512, show_default=True, help="Codebook size K.")
@click.option("--code-dim", type=int, default=64, show_default=True, help="Code vector size D.")
@click.option("--levels", type=click.Choice(["2", "3"]), default="2", show_default=True)
@click.option("--val-images", type=int, default=24, show_default=True)
@common_options
@friendly_errors
def train_vqvae_cmd(**kw) -> None:
    """Train the hierarchical VQ-VAE on a folder of images (random crops and flips)."""
    from vqcodec.train.vqvae import train_vqvae
    from vqcodec.vqvae import VQVAEConfig

    settings = settings_from(kw)
    config = VQVAEConfig(hidden=kw["hidden"], res_channels=kw["res_channels"], res_blocks=kw["res_blocks"],
                         num_codes=kw["num_codes"], code_dim=kw["code_dim"], levels=int(kw["levels"]))
    train_vqvae(kw["data"], settings, config, crop=kw["crop"], val=kw["val"], val_images=kw["val_images"])


@train.command("prior")
@click.option("--codes", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Code dataset made by extract-codes.")
@click.option("--val-codes", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--level", type=click.Choice(["top", "middle", "bottom"]), required=True)
@click.option("--tile", type=int, default=32, show_default=True,
              help="Tile side in bottom-level codes; the prior's context at coding time.")
@click.option("--channels", type=int, default=64, show_default=True)
@click.option("--layers", type=int, default=6, show_default=True)
@click.option("--attention-every", type=int, default=3, show_default=True, help="Top prior only.")
@click.option("--heads", type=int, default=2, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option("--out-blocks", type=int, default=2, show_default=True)
@click.option("--cond-channels", type=int, default=64, show_default=True)
@click.option("--cond-blocks", type=int, default=3, show_default=True)
@click.option("--val-tiles", type=int, default=256, show_default=True)
@common_options
@friendly_errors
def train_prior_cmd(**kw) -> None:
    """Train the PixelCNN prior of one level on a code dataset."""
    from vqcodec.train.prior import train_prior

    settings = settings_from(kw)
    train_prior(kw.pop("codes"), kw.pop("level"), settings, tile=kw.pop("tile"), val_codes=kw.pop("val_codes"),
                val_tiles=kw.pop("val_tiles"), **kw)
