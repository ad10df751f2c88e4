"""Stage 1 training: reconstruction MSE plus the commitment loss, codebooks by EMA."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vqcodec.imageio import list_images
from vqcodec.train.crops import RandomCrops
from vqcodec.train.evaluation import evaluate_images, psnr_from_mse
from vqcodec.train.loop import TrainSettings, train
from vqcodec.vqvae import VQVAE, VQVAEConfig
from vqcodec.vqvae.quantizer import usage_stats


def vqvae_loss(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    recon, latent_loss, codes = model(batch)
    mse = F.mse_loss(recon, batch)
    loss = mse + latent_loss
    metrics = {"loss": loss.item(), "mse": mse.item(), "psnr": psnr_from_mse(mse.item())}
    for lvl, c in enumerate(codes):
        metrics[f"used{lvl}"], metrics[f"perplexity{lvl}"] = usage_stats(c, int(c.max()) + 1)
    return loss, metrics


def train_vqvae(
    data: str | Path,
    settings: TrainSettings,
    config: VQVAEConfig,
    crop: int = 64,
    val: str | Path | None = None,
    val_images: int = 24,
) -> VQVAE:
    files = list_images(data)
    val_files = list_images(val)[:val_images] if val else None
    torch.manual_seed(settings.seed)  # the initial weights are part of the run: --seed decides them
    model = VQVAE(config)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        return evaluate_images(m, val_files, next(m.parameters()).device)  # type: ignore[arg-type]

    dataset = RandomCrops(files, crop, settings.seed)
    return train(model, "vqvae", config.to_dict(), dataset, vqvae_loss, validate if val_files else None, settings)
