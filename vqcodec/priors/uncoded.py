"""The prior of a level a model does not code: every code is 0, with probability 1.

A low-rate model can leave out its lowest level(s) (``VQVAEConfig.dropped_levels``): the encoder
sets their codes to 0 and the decoder was trained on exactly that input. Their prior is this one: a
single-symbol distribution, so the codec writes no symbols for the level and the decoder reads
none (``coding.tile_codec`` skips a level whose prior has one code), and a region, a damaged tile
or a sampler all treat the level like any other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from vqcodec.errors import VQCodecError
from vqcodec.priors.wavefront import Order

ARCH = "uncoded"


@dataclass
class UncodedConfig:
    arch: str = ARCH
    num_codes: int = 1  # the only code is 0
    cond_levels: int = 0  # the levels above are not needed to know it
    num_classes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UncodedConfig:
        cfg = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        if cfg.num_codes != 1 or cfg.num_classes != 0:
            raise ValueError("an uncoded level has exactly one code and no classes")
        return cfg


class UncodedPrior(nn.Module):
    """The float side (nothing to train): it exists so the registry's contract holds."""

    def __init__(self, config: UncodedConfig | None = None) -> None:
        super().__init__()
        self.config = config or UncodedConfig()


class _Stepper:
    def __init__(self, batch: int, height: int, width: int, device: torch.device) -> None:
        rows, cols = np.divmod(np.arange(height * width, dtype=np.int64), width)
        self.order: Order = [np.stack([rows, cols], axis=1)] if height * width else []
        self._ones = torch.ones((batch, height * width, 1), dtype=torch.float64, device=device)

    def probs(self, step: int) -> torch.Tensor:
        return self._ones

    def record(self, step: int, codes: torch.Tensor) -> None:
        if bool((codes != 0).any()):
            raise VQCodecError("an uncoded level can only hold the code 0")


class IntUncoded:
    """The integer twin (trivially exact): probability 1 for code 0 at every position."""

    def __init__(self, config: UncodedConfig, tensors: dict[str, torch.Tensor], device: str = "cpu") -> None:
        if tensors:
            raise VQCodecError(f"an uncoded level has no tensors, but the file holds {sorted(tensors)[0]!r}")
        self.config = config
        self.device = torch.device(device)

    @classmethod
    def from_float(cls, prior: UncodedPrior, calibration=None) -> IntUncoded:
        return cls(prior.config, {})

    def parallel_probs(self, codes: torch.Tensor, cond=None, label=None, temperature: float = 1.0) -> torch.Tensor:
        if bool((codes != 0).any()):
            raise VQCodecError("an uncoded level can only hold the code 0")
        return torch.ones((*codes.shape, 1), dtype=torch.float64, device=codes.device)

    def decode_order(self, height: int, width: int, order: str = "fast") -> Order:
        return _Stepper(0, height, width, self.device).order

    def stepper(self, batch: int, height: int, width: int, cond=None, label=None, temperature: float = 1.0,
                order: str = "fast", extents=None) -> _Stepper:
        return _Stepper(batch, height, width, self.device)  # code 0 everywhere, whatever the extents

    def state(self) -> dict[str, torch.Tensor]:
        return {}


def is_uncoded(prior) -> bool:
    """Whether the codec writes nothing for this prior's level."""
    return int(prior.config.num_codes) == 1
