"""Stage 1 training: reconstruction MSE plus the commitment loss, codebooks by EMA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from vqcodec.errors import VQCodecError
from vqcodec.imageio import list_images
from vqcodec.resample import check_scale, coded_size, resize
from vqcodec.train.crops import RandomCrops
from vqcodec.train.evaluation import evaluate_images, psnr_from_mse
from vqcodec.train.loop import TrainSettings, train
from vqcodec.vqvae import VQVAE, VQVAEConfig
from vqcodec.vqvae.quantizer import usage_stats
from vqcodec.zoo.codec_model import sub_tensors
from vqcodec.zoo.files import load_model


def vqvae_loss(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    recon, latent_loss, codes = model(batch)
    mse = F.mse_loss(recon, batch)
    loss = mse + latent_loss
    metrics = {"loss": loss.item(), "mse": mse.item(), "psnr": psnr_from_mse(mse.item())}
    for lvl, c in enumerate(codes):
        metrics[f"used{lvl}"], metrics[f"perplexity{lvl}"] = usage_stats(c, int(c.max()) + 1)
    return loss, metrics


def rung_loss(scales: tuple[float, ...]):
    """A loss for a decoder refit for rungs of the quality ladder above or below scale 1: the batch
    is split into one group per scale; each group is resized to that scale, coded, decoded and
    resized back, as ``compress --quality`` does, and the error is measured on the original crops.
    The decoder so learns what the resize back keeps (fine detail at the coded size averages out)."""

    def loss_fn(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        h, w = batch.shape[-2:]
        total, mse_sum = batch.new_zeros(()), 0.0
        for part, scale in zip(batch.tensor_split(len(scales)), scales):
            if not len(part):
                continue
            recon, latent_loss, _ = model(resize(part, *coded_size(w, h, scale)))
            mse = F.mse_loss(model.resize_back(recon, w, h), part)
            total = total + (mse + latent_loss) * (len(part) / len(batch))
            mse_sum += mse.item() * len(part) / len(batch)
        return total, {"loss": total.item(), "mse": mse_sum, "psnr": psnr_from_mse(mse_sum)}

    return loss_fn


def check_rung_scales(scales: tuple[float, ...], crop: int) -> tuple[float, ...]:
    """Scales for ``rung_loss``: each a valid ladder scale, each giving whole crops."""
    for s in scales:
        check_scale(s)
        if round(crop * s) < 8:
            raise VQCodecError(f"--crop {crop} at scale {s:g} is under 8 pixels")
    return tuple(scales)


def stage1_of(path: str | Path) -> tuple[VQVAEConfig, dict[str, torch.Tensor]]:
    """(config, tensors) of the VQ-VAE in a vqvae model file, a codec model file, or a stage 1 trained
    for rate with its priors (``train.rate_stage1``)."""
    kind, config, tensors = load_model(path)
    if kind in ("codec", "vqvae-rate"):
        return VQVAEConfig.from_dict(config["vqvae"]), sub_tensors(tensors, "vqvae.")
    if kind == "vqvae":
        return VQVAEConfig.from_dict(config), tensors
    raise VQCodecError(f"{path} holds a '{kind}' model, not a VQ-VAE or a codec model")


def refit_model(
    base: str | Path, extra_blocks: int = 0, dropped_levels: int | None = None, upscaler: tuple[int, int] | None = None,
) -> VQVAE:
    """The VQ-VAE of ``base`` with ``extra_blocks`` more (identity-initialised) decoder blocks and its
    codes frozen: fine-tuning it improves the pixels of the very same codes, so ``base``'s priors
    (and their bits) stay valid. With ``dropped_levels``, that many of the lowest levels are left
    out (code 0 everywhere) and the decoder learns to do without them: a lower rate. With
    ``upscaler`` (channels, layers) a new learned upscaler is added and is all that learns."""
    config, tensors = stage1_of(base)
    config = replace(config, decoder_extra_blocks=config.decoder_extra_blocks + extra_blocks)
    if dropped_levels is not None:
        if dropped_levels < config.dropped_levels or dropped_levels >= config.levels:
            raise VQCodecError(f"--drop-levels must be {config.dropped_levels} to {config.levels - 1} for {base}")
        config = replace(config, dropped_levels=dropped_levels)
    if upscaler is not None:
        if config.upscaler_channels:
            raise VQCodecError(f"{base} has an upscaler already")
        if upscaler[0] < 1 or upscaler[1] < 2:
            raise VQCodecError("--upscaler needs at least 1 channel and --upscaler-layers at least 2")
        config = replace(config, upscaler_channels=upscaler[0], upscaler_layers=upscaler[1])
    model = VQVAE(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.startswith(("decoder.extra.", "upscaler.")) for k in missing):
        raise VQCodecError(f"{base}: its VQ-VAE does not match its configuration")
    model.freeze_codes()
    if upscaler is not None:
        model.freeze_decoder()
    return model


def train_vqvae(
    data: str | Path,
    settings: TrainSettings,
    config: VQVAEConfig | None,
    crop: int = 64,
    val: str | Path | None = None,
    val_images: int = 24,
    refit: str | Path | None = None,
    extra_blocks: int = 0,
    dropped_levels: int | None = None,
    rung_scales: tuple[float, ...] = (),
    upscaler: tuple[int, int] | None = None,
) -> VQVAE:
    """Train a VQ-VAE of ``config`` from scratch, or (``refit``: a codec model or VQ-VAE file) only
    the decoder of an existing one, grown by ``extra_blocks`` residual blocks; with ``rung_scales``
    the refit decoder learns for those rungs of the ladder (``rung_loss``), and validation reports
    the mean PSNR over them. With ``upscaler`` (channels, layers) only a new learned upscaler
    learns, for the rungs below scale 1."""
    if rung_scales and refit is None:
        raise VQCodecError("rung scales train the decoder of a --refit model (its codes must stay fixed)")
    if upscaler is not None and not any(s < 1 for s in rung_scales):
        raise VQCodecError("an upscaler serves the rungs below scale 1: give --rung-scales with one under 1")
    rung_scales = check_rung_scales(rung_scales, crop)
    files = list_images(data)
    val_files = list_images(val)[:val_images] if val else None
    torch.manual_seed(settings.seed)  # the initial weights are part of the run: --seed decides them
    if refit is not None:
        model = refit_model(refit, extra_blocks, dropped_levels, upscaler)
        config = model.config
    elif config is None:
        raise VQCodecError("train_vqvae needs a configuration or a model to refit")
    else:
        model = VQVAE(config)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        device = next(m.parameters()).device
        if not rung_scales:
            return evaluate_images(m, val_files, device)  # type: ignore[arg-type]
        per_scale = {s: evaluate_images(m, val_files, device, s)["psnr"] for s in rung_scales}  # type: ignore[arg-type]
        return {"psnr": sum(per_scale.values()) / len(per_scale), **{f"psnr@{s:g}": v for s, v in per_scale.items()}}

    dataset = RandomCrops(files, crop, settings.seed)
    loss = rung_loss(rung_scales) if rung_scales else vqvae_loss
    return train(model, "vqvae", config.to_dict(), dataset, loss, validate if val_files else None, settings)
