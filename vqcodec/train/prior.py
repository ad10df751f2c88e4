"""Stage 2 training: each prior learns p(level codes | codes above, label) on code tiles."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from vqcodec.errors import VQCodecError
from vqcodec.priors.multipass import SCHEDULES, MultipassConfig, MultipassPrior
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig, nll_bits
from vqcodec.train.code_datasets import CodeTiles, load_code_sets
from vqcodec.train.evaluation import mean_bits
from vqcodec.train.loop import TrainSettings, train
from vqcodec.vqvae import LEVEL_NAMES


def level_index(name: str, levels: int) -> int:
    names = LEVEL_NAMES[levels]
    if name not in names:
        raise VQCodecError(f"level '{name}' does not exist in a {levels}-level model ({', '.join(names)})")
    return names.index(name)


def prior_inputs(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Logits for a batch (codes, cond..., label) from CodeTiles."""
    codes, *cond, label = batch
    cfg = (model.module if hasattr(model, "module") else model).config
    return model(codes, cond or None, label if cfg.num_classes else None)


def prior_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
    loss = nll_bits(prior_inputs(model, batch), batch[0])
    return loss, {"bits": loss.item()}


MULTIPASS_OPTIONS = ("channels", "embed_dim", "window", "blocks", "cond_channels", "cond_blocks", "schedule")


def build_prior(meta: dict, level: int, cfg_overrides: dict) -> torch.nn.Module:
    """A fresh prior of ``cfg_overrides["arch"]`` (the gated PixelCNN by default) for ``level``."""
    top = meta["levels"] - 1
    arch = cfg_overrides.pop("arch", None) or "gated-pixelcnn"
    if arch == "multipass":
        mp = {k: v for k, v in cfg_overrides.items() if k in MULTIPASS_OPTIONS and v is not None}
        if "schedule" in mp:
            mp["schedule"] = SCHEDULES[mp["schedule"]]
        return MultipassPrior(MultipassConfig(num_codes=meta["num_codes"], cond_levels=top - level,
                                              num_classes=len(meta["classes"]), **mp))
    for k in ("embed_dim", "window", "blocks", "schedule"):  # multipass-only options
        cfg_overrides.pop(k, None)
    attention_every = cfg_overrides.pop("attention_every", 3)
    wavefront = cfg_overrides.pop("attention_wavefront", False)
    cfg = PriorConfig(
        num_codes=meta["num_codes"],
        cond_levels=top - level,
        attention_every=attention_every if level == top else 0,
        attention_wavefront=bool(wavefront and level == top),
        num_classes=len(meta["classes"]),
        **cfg_overrides,
    )
    return PixelCNNPrior(cfg)


def first_layers(prior: PixelCNNPrior, layers: int) -> PixelCNNPrior:
    """``prior`` with only its first ``layers`` gated layers (and their attention), the head reading
    the last one kept: a cheaper prior to fine-tune from a trained one. Each layer adds to the
    h-stream, so the shorter prior starts close to the whole one (bits, docs/models.md)."""
    have = prior.config.layers
    if not 1 <= layers <= have:
        raise VQCodecError(f"the prior has {have} layers; it can keep 1 to {have}, not {layers}")
    small = PixelCNNPrior(dataclasses.replace(prior.config, layers=layers))
    kept = {k: v for k, v in prior.state_dict().items()
            if not (m := re.match(r"(layers|attention)\.(\d+)\.", k)) or int(m.group(2)) < layers}
    small.load_state_dict(kept)  # strict: every tensor of the smaller prior comes from the larger
    return small


def rate_run_prior(path: str | Path, meta: dict, level: int) -> MultipassPrior:
    """The float prior of ``level`` that a stage 1 trained for rate (``train vqvae --finetune``) was
    trained with: it already knows that stage 1's codes, so fitting it to them takes few steps."""
    from vqcodec.zoo.codec_model import sub_tensors
    from vqcodec.zoo.files import load_model

    _, config, tensors = load_model(path)
    vq = config["vqvae"]
    if (vq["levels"], vq["num_codes"]) != (meta["levels"], meta["num_codes"]):
        raise VQCodecError(f"the code dataset has {meta['levels']} levels of {meta['num_codes']} codes; "
                           f"{path} codes {vq['levels']} levels of {vq['num_codes']}")
    prior = MultipassPrior(MultipassConfig.from_dict(config["priors"][level]))
    prior.load_state_dict(sub_tensors(tensors, f"priors.{level}."))
    return prior


def refit_start(
    path: str | Path, meta: dict, level: int, layers: int | None = None
) -> tuple[torch.nn.Module, int | None]:
    """(float prior, tile) where fine-tuning the prior of ``level`` of the codec model at ``path``
    starts; with ``layers``, only its first that many layers (``first_layers``). A stage 1 trained
    for rate (``rate_run_prior``) gives its multi-pass prior, and no tile (the command's stands)."""
    from vqcodec.train.rate_stage1 import KIND
    from vqcodec.zoo.codec_model import load_codec_model
    from vqcodec.zoo.registry import read_metadata

    if read_metadata(path).get("kind") == KIND:
        if layers is not None:
            raise VQCodecError("a multi-pass prior keeps all its layers: leave --layers out")
        return rate_run_prior(path, meta, level), None

    m = load_codec_model(path)
    vq = m.vqvae.config
    if (vq.levels, vq.num_codes) != (meta["levels"], meta["num_codes"]):
        raise VQCodecError(f"the code dataset has {meta['levels']} levels of {meta['num_codes']} codes; "
                           f"{path} codes {vq.levels} levels of {vq.num_codes}")
    to_float = getattr(m.priors[level], "to_float", None)
    if to_float is None:
        raise VQCodecError(f"{path} has no trained prior for level {LEVEL_NAMES[vq.levels][level]} to start from")
    prior = to_float()
    return (prior if layers is None else first_layers(prior, layers)), m.tile


def train_prior(
    codes: str | Path | Sequence[str | Path],
    level_name: str,
    settings: TrainSettings,
    tile: int = 32,
    val_codes: str | Path | Sequence[str | Path] | None = None,
    val_tiles: int = 256,
    refit: str | Path | None = None,
    refit_layers: int | None = None,
    **cfg_overrides,
) -> PixelCNNPrior:
    """Train the prior of level ``level_name`` on code datasets (several are pooled); with
    ``refit`` (a codec model's file) start from that model's prior of the level, made float again,
    with its architecture and tile (a shipped prior fine-tuned on the codes of the rungs it will
    code, say), keeping only its first ``refit_layers`` layers if given (a cheaper prior)."""
    maps, labels, meta = load_code_sets(codes)
    level = level_index(level_name, meta["levels"])
    torch.manual_seed(settings.seed)  # --seed decides the initial weights too
    if refit is not None:
        model, start_tile = refit_start(refit, meta, level, refit_layers)
        tile = start_tile or tile
    else:
        model = build_prior(meta, level, dict(cfg_overrides))
    config = {**model.config.to_dict(), "level": level, "tile": tile, "levels": meta["levels"]}
    dataset = CodeTiles(maps, labels, level, tile, settings.seed)
    train_probe = CodeTiles(maps, labels, level, tile, seed=999_999)
    val_probe = None
    if val_codes is not None:
        vmaps, vlabels, _ = load_code_sets(val_codes)
        val_probe = CodeTiles(vmaps, vlabels, level, tile, seed=999_999)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        result = {"train_bits": mean_bits(m, train_probe, val_tiles)}
        if val_probe is not None:
            result["bits"] = mean_bits(m, val_probe, val_tiles)
        return result

    return train(model, f"prior-{level_name}", config, dataset, prior_loss, validate, settings)
