"""Stage 1 training: reconstruction MSE plus the commitment loss, codebooks by EMA."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import RandomCrops, list_images, load_rgb
from .quantizer import usage_stats
from .training import TrainSettings, train
from .vqvae import VQVAE, VQVAEConfig


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-12))


def vqvae_loss(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    recon, latent_loss, codes = model(batch)
    mse = F.mse_loss(recon, batch)
    loss = mse + latent_loss
    metrics = {"loss": loss.item(), "mse": mse.item(), "psnr": psnr(mse.item())}
    for lvl, c in enumerate(codes):
        metrics[f"used{lvl}"], metrics[f"perplexity{lvl}"] = usage_stats(c, int(c.max()) + 1)
    return loss, metrics


@torch.no_grad()
def evaluate_images(model: VQVAE, files: list[Path], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean per-image PSNR, MSE, and codebook usage per level over whole images."""
    k = model.config.num_codes
    counts = [torch.zeros(k, dtype=torch.long) for _ in range(model.config.levels)]
    psnrs, mses = [], []
    for f in files:
        x = torch.from_numpy(load_rgb(f).transpose(2, 0, 1).copy())[None].to(device)
        codes = model.encode(x)
        recon = model.decode(codes, x.shape[2], x.shape[3]).clamp(0, 1)
        mse = float(F.mse_loss((recon * 255).round() / 255, x))
        mses.append(mse)
        psnrs.append(psnr(mse))
        for lvl, c in enumerate(codes):
            counts[lvl] += torch.bincount(c.reshape(-1).cpu(), minlength=k)
    result = {"psnr": sum(psnrs) / len(psnrs), "mse": sum(mses) / len(mses)}
    for lvl, cnt in enumerate(counts):
        p = cnt.double() / cnt.sum()
        nz = p[p > 0]
        result[f"used{lvl}"] = int((cnt > 0).sum())
        result[f"perplexity{lvl}"] = float(torch.exp(-(nz * nz.log()).sum()))
    return result


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
