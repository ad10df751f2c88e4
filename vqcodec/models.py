"""Rebuild models from their files (the configuration travels inside each file)."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import load_model
from .errors import VQCodecError
from .prior import PixelCNNPrior, PriorConfig
from .vqvae import VQVAE, VQVAEConfig


def load_vqvae(path: str | Path) -> VQVAE:
    kind, config, tensors = load_model(path)
    if kind != "vqvae":
        raise VQCodecError(f"{path} holds a '{kind}' model, not a vqvae")
    model = VQVAE(VQVAEConfig.from_dict(config))
    model.load_state_dict(tensors)
    return model.eval()


def load_prior(path: str | Path) -> tuple[PixelCNNPrior, dict]:
    """(prior, its full config incl. level and tile) from a prior run's model file."""
    kind, config, tensors = load_model(path)
    if not kind.startswith("prior"):
        raise VQCodecError(f"{path} holds a '{kind}' model, not a prior")
    model = PixelCNNPrior(PriorConfig.from_dict(config))
    model.load_state_dict(tensors)
    return model.eval(), config
