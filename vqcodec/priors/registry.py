"""Prior architectures by the ``arch`` key of their configuration.

Adding an architecture: a float module (trained), its integer twin (``priors.contract``) and one
line in ``ARCHS``. A configuration without ``arch`` is the original gated PixelCNN, so model files
written before the key existed load unchanged, with the same fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vqcodec.errors import VQCodecError
from vqcodec.priors.contract import IntegerPrior
from vqcodec.priors.int_pixelcnn import IntPixelCNN
from vqcodec.priors.multipass import ARCH as MULTIPASS
from vqcodec.priors.multipass import IntMultipass, MultipassConfig, MultipassPrior
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig
from vqcodec.priors.uncoded import ARCH as UNCODED
from vqcodec.priors.uncoded import IntUncoded, UncodedConfig, UncodedPrior

DEFAULT_ARCH = "gated-pixelcnn"


@dataclass(frozen=True)
class PriorArch:
    config: type  # a dataclass with from_dict / to_dict
    float_model: type[nn.Module]  # built from a config; trained
    integer_model: type  # (config, tensors, device) -> IntegerPrior; .from_float(float_model, batches)


ARCHS: dict[str, PriorArch] = {
    DEFAULT_ARCH: PriorArch(PriorConfig, PixelCNNPrior, IntPixelCNN),
    UNCODED: PriorArch(UncodedConfig, UncodedPrior, IntUncoded),
    MULTIPASS: PriorArch(MultipassConfig, MultipassPrior, IntMultipass),
}


def arch_of(config: dict) -> PriorArch:
    name = config.get("arch", DEFAULT_ARCH)
    if name not in ARCHS:
        raise VQCodecError(f"unknown prior architecture '{name}' (this vqcodec knows: {', '.join(ARCHS)})")
    return ARCHS[name]


def prior_config(config: dict) -> Any:
    """The architecture's configuration object for a config dict from a model file."""
    return arch_of(config).config.from_dict(config)


def build_float_prior(config: dict) -> nn.Module:
    """A freshly initialised float prior for ``config``."""
    return arch_of(config).float_model(prior_config(config))


def build_integer_prior(config: dict, tensors: dict[str, torch.Tensor], device: str = "cpu") -> IntegerPrior:
    """The integer prior stored as ``tensors`` under ``config``."""
    return arch_of(config).integer_model(prior_config(config), tensors, device=device)


def integer_twin(prior: nn.Module, calibration) -> IntegerPrior:
    """Quantize a trained float prior with calibration batches of (codes, cond, label)."""
    return arch_of(prior.config.to_dict()).integer_model.from_float(prior, calibration)
