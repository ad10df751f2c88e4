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
        click.option("--preset", default=None,
                     help="Start from a named setting (the one behind a shipped model, docs/models.md); options "
                          "given on the command line still win."),
        DEVICE,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def apply_preset(kw: dict, stage: str) -> set[str]:
    """Fill ``kw`` with the preset's options wherever the command line left the default; the names
    of the options it filled."""
    name = kw.pop("preset")
    if name is None:
        return set()
    from vqcodec.train.presets import preset_options

    ctx = click.get_current_context()
    filled: set[str] = set()
    for key, value in preset_options(name, stage).items():
        if key not in kw:
            raise click.UsageError(f"preset '{name}' sets --{key.replace('_', '-')}, which this command lacks")
        if ctx.get_parameter_source(key) in (click.core.ParameterSource.DEFAULT, None):
            kw[key] = value
            filled.add(key)
    return filled


def settings_from(kw: dict):
    from vqcodec.train.loop import TrainSettings

    names = ["out", "steps", "batch", "lr", "seed", "checkpoint_every", "validate_every", "workers",
             "max_minutes", "resume", "device", "stop_at"]
    return TrainSettings(**{n: kw.pop(n) for n in names})


def parse_scales(text: str | tuple | list | None, option: str = "--rung-scales") -> tuple[float, ...]:
    """--rung-scales "1.5,1.75" (or a preset's list; or another ``option``'s numbers) as floats; a
    clear error for anything else."""
    from vqcodec.errors import VQCodecError

    if not text:
        return ()
    items = text if isinstance(text, (tuple, list)) else str(text).split(",")
    try:
        return tuple(float(x) for x in items)
    except ValueError:
        raise VQCodecError(f"{option} takes numbers separated by commas, not {text!r}") from None


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
@click.option("--refit", default=None, metavar="NAME|FILE",
              help="Train only the decoder of this codec model (or VQ-VAE file): its codes, and so its priors "
                   "and bits, stay as they are; the size options are then taken from it.")
@click.option("--extra-blocks", type=int, default=0, show_default=True,
              help="With --refit: residual blocks added to the decoder (starting as the identity).")
@click.option("--drop-levels", type=int, default=None,
              help="With --refit: leave out this many of the lowest code levels (a lower rate); the decoder "
                   "learns to do without them.")
@click.option("--rung-scales", default=None, metavar="S1,S2,...",
              help="With --refit: train the decoder for these rungs of the quality ladder: crops are coded "
                   "at each scale and the error is measured after resizing back to the crop, as compress "
                   "--quality does.")
@click.option("--upscaler", type=int, default=None, metavar="CHANNELS",
              help="With --refit and --rung-scales under 1: add a learned upscaler of this many channels, "
                   "run after the resize back, and train only it (the decoder stays).")
@click.option("--upscaler-layers", type=int, default=5, show_default=True,
              help="With --upscaler: its 3x3 convolutions.")
@click.option("--finetune", default=None, metavar="NAME|FILE",
              help="Train the whole stage 1 of this codec model (or VQ-VAE file) for rate and distortion, "
                   "with a multi-pass prior per level pricing its codes (docs/models.md): its codes change, "
                   "so it needs priors of its own.")
@click.option("--rate-mu", default=None, metavar="BOTTOM,TOP",
              help="With --finetune: the price of a bit in squared latent distance per level, bottom first "
                   "[default: 0.036,0.0022; 0,0 trains for distortion alone].")
@click.option("--fixed-codebooks", is_flag=True,
              help="With --finetune: the codewords stay where they are (no EMA updates); the encoder and "
                   "decoder learn around them.")
@click.option("--prior-top", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --finetune: start the top level's prior from this multi-pass prior file.")
@click.option("--prior-bottom", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --finetune: start the bottom level's prior from this multi-pass prior file.")
@common_options
@friendly_errors
def train_vqvae_cmd(**kw) -> None:
    """Train the hierarchical VQ-VAE on a folder of images (random crops and flips)."""
    from vqcodec.errors import VQCodecError
    from vqcodec.train.vqvae import train_vqvae
    from vqcodec.vqvae import VQVAEConfig

    apply_preset(kw, "vqvae")
    settings = settings_from(kw)
    if kw["finetune"] is not None:
        if kw["refit"] is not None or kw["drop_levels"] is not None or kw["rung_scales"] or kw["upscaler"]:
            raise VQCodecError("--finetune trains a whole stage 1: it takes --extra-blocks, not --refit, "
                               "--drop-levels, --rung-scales or --upscaler")
        return _train_rate(kw, settings)
    changes = kw["extra_blocks"] or kw["drop_levels"] is not None or kw["rung_scales"] or kw["upscaler"]
    if changes and kw["refit"] is None:
        raise VQCodecError("--extra-blocks, --drop-levels, --rung-scales and --upscaler change a --refit model")
    if kw["rate_mu"] is not None or kw["prior_top"] or kw["prior_bottom"] or kw["fixed_codebooks"]:
        raise VQCodecError("--rate-mu, --fixed-codebooks, --prior-top and --prior-bottom go with --finetune")
    upscaler = (kw["upscaler"], kw["upscaler_layers"]) if kw["upscaler"] else None
    scales = parse_scales(kw["rung_scales"])
    config = VQVAEConfig(hidden=kw["hidden"], res_channels=kw["res_channels"], res_blocks=kw["res_blocks"],
                         num_codes=kw["num_codes"], code_dim=kw["code_dim"], levels=int(kw["levels"]))
    from vqcodec.zoo.registry import resolve_model

    refit = resolve_model(kw["refit"]) if kw["refit"] else None
    train_vqvae(kw["data"], settings, None if refit else config, crop=kw["crop"], val=kw["val"],
                val_images=kw["val_images"], refit=refit, extra_blocks=kw["extra_blocks"],
                dropped_levels=kw["drop_levels"], rung_scales=scales, upscaler=upscaler)


def _train_rate(kw: dict, settings) -> None:
    """``train vqvae --finetune``: the whole stage 1 trained for rate (``vqcodec.train.rate_stage1``)."""
    from vqcodec.errors import VQCodecError
    from vqcodec.train.rate_stage1 import DEFAULT_MU, train_rate_stage1
    from vqcodec.zoo.registry import resolve_model

    mu = DEFAULT_MU if kw["rate_mu"] is None else parse_scales(kw["rate_mu"], "--rate-mu")
    if any(m < 0 for m in mu):
        raise VQCodecError("--rate-mu takes prices of 0 or more")
    priors = {lvl: p for lvl, p in ((0, kw["prior_bottom"]), (1, kw["prior_top"])) if p is not None}
    train_rate_stage1(kw["data"], settings, resolve_model(kw["finetune"]), mu, crop=kw["crop"], val=kw["val"],
                      val_images=kw["val_images"], extra_blocks=kw["extra_blocks"], prior_files=priors,
                      fixed_codebooks=kw["fixed_codebooks"])


# what a prior's architecture is made of: a --refit run takes these from the model it starts from
PRIOR_ARCHITECTURE = ("tile", "channels", "layers", "attention_every", "attention_wavefront", "heads", "dropout",
                      "out_blocks", "cond_channels", "cond_blocks", "arch", "embed_dim", "window", "blocks", "schedule")


@train.command("prior")
@click.option("--codes", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, multiple=True,
              help="Code dataset made by extract-codes; repeat it to pool several (the rungs a prior will code).")
@click.option("--val-codes", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="Validation code dataset; repeat it to pool several.")
@click.option("--level", type=click.Choice(["top", "middle", "bottom"]), required=True)
@click.option("--tile", type=int, default=32, show_default=True,
              help="Tile side in bottom-level codes; the prior's context at coding time.")
@click.option("--arch", type=click.Choice(["gated-pixelcnn", "multipass"]), default="gated-pixelcnn",
              show_default=True, help="gated-pixelcnn: the paper's prior (wavefront decoding); multipass: a few "
                                      "passes a level, each one small masked-convolution network (fast).")
@click.option("--channels", type=int, default=64, show_default=True)
@click.option("--layers", type=int, default=6, show_default=True)
@click.option("--embed-dim", type=int, default=None, help="multipass: code embedding width [default: 32].")
@click.option("--window", type=int, default=None, help="multipass: context window side, odd [default: 7].")
@click.option("--blocks", type=int, default=None, help="multipass: residual 1x1 blocks per code [default: 2].")
@click.option("--schedule", type=click.Choice(["4x4", "8x8"]), default=None,
              help="multipass: the passes' cell: 4x4 in 7 passes [default], or 8x8 in 8 (fewer codes without "
                   "context; needs --window 9).")
@click.option("--attention-every", type=int, default=3, show_default=True, help="Top prior only.")
@click.option("--attention-wavefront", is_flag=True,
              help="Top prior only: attention sees what a wavefront decoder has decoded, so the level decodes "
                   "by wavefronts (about half the steps of raster order).")
@click.option("--heads", type=int, default=2, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option("--out-blocks", type=int, default=2, show_default=True)
@click.option("--cond-channels", type=int, default=64, show_default=True)
@click.option("--cond-blocks", type=int, default=3, show_default=True)
@click.option("--val-tiles", type=int, default=256, show_default=True)
@click.option("--refit", default=None, metavar="NAME|FILE",
              help="Start from this codec model's prior of --level (its integer prior made float again) and "
                   "fine-tune it; the architecture and tile are that prior's, but --layers may keep only its "
                   "first layers (a cheaper prior). Export with --refit-of. A stage 1 trained with --finetune "
                   "gives the multi-pass prior it trained with (--tile is yours to choose).")
@common_options
@friendly_errors
def train_prior_cmd(**kw) -> None:
    """Train the PixelCNN prior of one level on a code dataset."""
    from vqcodec.train.prior import train_prior
    from vqcodec.zoo.registry import resolve_model

    from_preset = apply_preset(kw, f"prior-{kw['level']}")
    if kw["refit"] is not None:
        from vqcodec.train.rate_stage1 import KIND
        from vqcodec.zoo.registry import read_metadata

        kw["refit"] = resolve_model(kw["refit"])
        rate_run = read_metadata(kw["refit"]).get("kind") == KIND  # its priors have no coding tile yet
        free = {"layers", "tile"} if rate_run else {"layers"}
        ctx = click.get_current_context()
        given = [k for k in PRIOR_ARCHITECTURE if k not in free
                 and ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} is the --refit model's; leave it out")
        chosen = "layers" in from_preset or ctx.get_parameter_source("layers") == click.core.ParameterSource.COMMANDLINE
        kw["refit_layers"] = kw["layers"] if chosen else None
        for k in PRIOR_ARCHITECTURE[1:]:  # the tile goes on, and the model's (if it has one) replaces it
            kw.pop(k)
    settings = settings_from(kw)
    train_prior(kw.pop("codes"), kw.pop("level"), settings, tile=kw.pop("tile"), val_codes=kw.pop("val_codes") or None,
                val_tiles=kw.pop("val_tiles"), **kw)
