"""Stage 1 trained for rate: the whole VQ-VAE fine-tuned together with multi-pass priors that price
its codes.

The paper trains stage 1 for pixels alone and fits the priors afterwards, so nothing asks the
encoder for codes that are cheap to code. Here each level's quantizer input is pulled (the
commitment loss) toward the codeword that minimises

    squared distance + ``mu[level]`` x bits under the level's prior

among its ``CANDIDATES`` nearest, instead of toward the nearest one: entropy-constrained VQ (Chou,
Lookabaugh and Gray 1989) taught to the encoder, so that at inference the nearest codeword is
already the cheap one. The decoder still reads the nearest codewords, as the codec does; the
codebooks follow them by EMA, or stay fixed (``fixed_codebooks``: at batch 16 the EMA drifted and
cost PSNR, docs/models.md). The priors (one per level, the fast ladder's multi-pass
family) learn the current codes by their cross-entropy in the same step, so the price follows the
codes; their bits are taken in the nearest codes' context, as ``compress --rdo`` takes them.

The reconstruction gradient reaches the encoder through the straight-through estimator, as in
plain training; ``mu`` 0 gives plain fine-tuning (with the priors' rate reported alongside).

``mu`` is per level because a unit of latent distance costs the pixels differently at each level.
Measured on paper-refit2 (32 training crops; 5 % of the codes swapped for their second-nearest):
a unit of squared distance costs 0.167 of pixel squared error (summed over channels, [0, 1] scale)
at the bottom and 2.67 at the top. The ladder's slope at the default rung is about 6e-3 of that
error per bit (Kodak: 2e-3 of MSE per bpp between qualities 5 and 6), so ``mu`` = 6e-3 / cost per
unit: 0.036 at the bottom, 0.0022 at the top (``DEFAULT_MU``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqcodec.errors import VQCodecError
from vqcodec.imageio import list_images
from vqcodec.priors.multipass import SCHEDULE_8, MultipassConfig, MultipassPrior
from vqcodec.train.crops import RandomCrops
from vqcodec.train.evaluation import coded_image, psnr_from_mse
from vqcodec.train.loop import train
from vqcodec.train.vqvae import stage1_of
from vqcodec.vqvae import VQVAE
from vqcodec.zoo.files import load_model

CANDIDATES = 8  # nearest codewords weighed per position
DEFAULT_MU = (0.036, 0.0022)  # bits' price in squared latent distance, bottom first (module docstring)
KIND = "vqvae-rate"  # model-file kind: the VQ-VAE under "vqvae.", its priors under "priors.<level>."


def default_prior(num_codes: int, level: int, levels: int) -> MultipassPrior:
    """A fresh prior of the fast ladder's shape for ``level`` (0 = bottom), conditioned on the levels above."""
    top = level == levels - 1
    return MultipassPrior(MultipassConfig(num_codes=num_codes, channels=96, window=9, schedule=SCHEDULE_8,
                                          cond_levels=levels - 1 - level, cond_channels=64 if top else 96,
                                          cond_blocks=3))


class RateStage1(nn.Module):
    """A VQ-VAE and one prior per coded level (bottom first), trained together."""

    def __init__(self, vqvae: VQVAE, priors: list[MultipassPrior], mu: tuple[float, ...],
                 fixed_codebooks: bool = False) -> None:
        super().__init__()
        if len(mu) != vqvae.config.levels:
            raise ValueError(f"one rate price per level: {vqvae.config.levels}, not {len(mu)}")
        self.vqvae, self.priors, self.mu = vqvae, nn.ModuleList(priors), tuple(mu)
        self.fixed_codebooks = fixed_codebooks
        self.config = vqvae.config
        self.train(self.training)

    def train(self, mode: bool = True) -> RateStage1:
        """With ``fixed_codebooks`` the codewords never move (no EMA step, no restart): the encoder
        and decoder learn around them."""
        super().train(mode)
        if self.fixed_codebooks:
            self.vqvae.quantizers.train(False)
        return self

    def to_config(self) -> dict:
        return {"vqvae": self.vqvae.config.to_dict(), "priors": [p.config.to_dict() for p in self.priors],
                "mu": list(self.mu), "fixed_codebooks": self.fixed_codebooks}

    def level_logits(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level (bottom first): logits (B, K, H, W) of every code under its prior."""
        out = []
        for lvl, prior in enumerate(self.priors):
            out.append(prior(codes[lvl], codes[lvl + 1:] or None))
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list]:
        """Reconstruction, the rate-aware commitment loss, the priors' cross-entropy (bits per code,
        per level), the codes, and the share of positions whose pull differs from the nearest code."""
        vq = self.vqvae
        h, w = x.shape[2:]
        # the codebooks the codes are chosen from: training's EMA step moves them inside _quantize_all
        books = [q.embed.detach().clone() for q in vq.quantizers]
        latents: list[torch.Tensor] = []  # top first
        quant, codes, _ = vq._quantize_all(vq.pad(x) - 0.5, latents, with_loss=False)
        recon = vq.decode_quantized(quant)[:, :, :h, :w] + 0.5
        logits = self.level_logits([c.detach() for c in codes])
        levels = vq.config.levels
        commit, moved, ce = x.new_zeros(()), [], []
        for lvl in range(levels):
            z = latents[levels - 1 - lvl].permute(0, 2, 3, 1)  # (B, H, W, D)
            with torch.no_grad():
                bits = -F.log_softmax(logits[lvl].float(), 1).permute(0, 2, 3, 1) / math.log(2)  # (B, H, W, K)
                idx, dist = vq.quantizers[lvl].candidates(z.detach(), CANDIDATES, book=books[lvl])
                cost = dist + self.mu[lvl] * bits.gather(-1, idx)
                pick = idx.gather(-1, cost.argmin(-1, keepdim=True))[..., 0]
                moved.append((pick != codes[lvl]).float().mean())
            commit = commit + F.mse_loss(z, F.embedding(pick, books[lvl]))
            ce.append(F.cross_entropy(logits[lvl], codes[lvl]) / math.log(2))
        return {"recon": recon, "commit": vq.config.beta * commit, "ce": ce, "codes": codes, "moved": moved}


def rate_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixels' MSE + rate-aware commitment + the priors' cross-entropy (which trains only them: codes
    are integers, so no gradient reaches the VQ-VAE through it)."""
    out = model(batch)
    mse = F.mse_loss(out["recon"], batch)
    ce = out["ce"]
    pixels = batch.shape[2] * batch.shape[3]
    bpp = sum(float(b.detach()) * c.shape[1] * c.shape[2] / pixels for b, c in zip(ce, out["codes"]))
    loss = mse + out["commit"] + sum(ce)
    metrics = {"loss": loss.item(), "mse": mse.item(), "psnr": psnr_from_mse(mse.item()), "bpp": bpp}
    for lvl, (b, m) in enumerate(zip(ce, out["moved"])):
        metrics[f"bits{lvl}"], metrics[f"moved{lvl}"] = float(b.detach()), float(m)
    return loss, metrics


@torch.no_grad()
def evaluate_rate(model: RateStage1, files: list[Path]) -> dict[str, float]:
    """Mean PSNR (8-bit output) and the priors' bits per pixel (their cross-entropy on the nearest
    codes, what a range coder driven by them would spend within about 1 %) over whole images."""
    psnrs, bpps = [], []
    for f in files:
        codes, mse, pixels = coded_image(model.vqvae, f)
        psnrs.append(psnr_from_mse(mse))
        logits = model.level_logits(codes)
        total = sum(float(F.cross_entropy(lg, c, reduction="sum")) / math.log(2) for lg, c in zip(logits, codes))
        bpps.append(total / pixels)
    return {"psnr": sum(psnrs) / len(psnrs), "bpp": sum(bpps) / len(bpps)}


def start_model(base: str | Path, mu: tuple[float, ...], extra_blocks: int = 0,
                prior_files: dict[int, str | Path] | None = None, fixed_codebooks: bool = False) -> RateStage1:
    """The VQ-VAE of ``base`` (a codec model or VQ-VAE file) with every part free to learn (its codes
    will change, so it needs priors of its own), grown by ``extra_blocks`` identity decoder blocks,
    and a prior per level: from ``prior_files`` (level -> a multi-pass prior's training file), or fresh."""
    config, tensors = stage1_of(base)
    if len(mu) != config.levels:
        raise VQCodecError(f"one rate price per level: {base} codes {config.levels} levels, not {len(mu)}")
    if config.dropped_levels or config.upscaler_channels:
        raise VQCodecError(f"{base}: a rate-trained stage 1 starts from a model that codes every level, "
                           "without an upscaler")
    config = replace(config, decoder_extra_blocks=config.decoder_extra_blocks + extra_blocks)
    vqvae = VQVAE(config)
    missing, unexpected = vqvae.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.startswith("decoder.extra.") for k in missing):
        raise VQCodecError(f"{base}: its VQ-VAE does not match its configuration")
    priors = []
    for lvl in range(config.levels):
        path = (prior_files or {}).get(lvl)
        if path is None:
            priors.append(default_prior(config.num_codes, lvl, config.levels))
            continue
        kind, cfg, t = load_model(path)
        if not kind.startswith("prior") or cfg.get("arch") != "multipass" or cfg.get("level") != lvl:
            raise VQCodecError(f"{path} is not a multi-pass prior of level {lvl}")
        prior = MultipassPrior(MultipassConfig.from_dict(cfg))
        if (prior.config.num_codes, prior.config.cond_levels) != (config.num_codes, config.levels - 1 - lvl):
            raise VQCodecError(f"{path} does not fit this VQ-VAE's codes")
        prior.load_state_dict(t)
        priors.append(prior)
    return RateStage1(vqvae, priors, mu, fixed_codebooks)


def train_rate_stage1(data: str | Path, settings, base: str | Path, mu: tuple[float, ...], crop: int = 128,
                      val: str | Path | None = None, val_images: int = 24, extra_blocks: int = 0,
                      prior_files: dict[int, str | Path] | None = None, fixed_codebooks: bool = False) -> RateStage1:
    """Fine-tune ``base``'s whole stage 1 for rate and distortion (module docstring) on random crops of
    ``data`` (a folder, searched recursively); validation reports PSNR and the priors' bpp."""
    torch.manual_seed(settings.seed)
    model = start_model(base, mu, extra_blocks, prior_files, fixed_codebooks)
    val_files = list_images(val)[:val_images] if val else None

    def validate(m: nn.Module) -> dict[str, float]:
        return evaluate_rate(m, val_files)  # type: ignore[arg-type]

    dataset = RandomCrops(list_images(data), crop, settings.seed)
    return train(model, KIND, model.to_config(), dataset, rate_loss, validate if val_files else None, settings)
