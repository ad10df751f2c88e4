"""A codec model: the stage-1 VQ-VAE plus one integer prior per level, in one safetensors file.

Tensor names are prefixed ``vqvae.`` and ``prior{level}.``; the metadata holds the configurations
and the default tile size. The file's fingerprint (a hash of every tensor) goes into each
bitstream, so a file is never decoded with a different model than the one that wrote it. The whole
file is checked against its configuration when it is loaded, so a broken file fails there, naming
the tensor, and never half-way through a compress.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vqcodec.coding.tiles import DEFAULT_TILE, check_tile
from vqcodec.errors import VQCodecError
from vqcodec.priors.contract import IntegerPrior
from vqcodec.priors.registry import build_integer_prior
from vqcodec.vqvae import VQVAE, VQVAEConfig
from vqcodec.zoo.files import fingerprint, load_model
from vqcodec.zoo.registry import resolve_model


@dataclass(frozen=True)
class CodecModel:
    """A loaded codec model; cached per process and shared, so it is immutable."""

    vqvae: VQVAE
    priors: tuple[IntegerPrior, ...]  # by level, 0 = bottom
    tile: int  # default tile side in bottom-level codes (a file records its own)
    fingerprint: bytes
    name: str
    device: torch.device

    @property
    def levels(self) -> int:
        return self.vqvae.config.levels


def sub_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix...``, without the prefix (one part of a codec-model file)."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def codec_model_from(path: str, config: dict, tensors: dict[str, torch.Tensor], device: str) -> CodecModel:
    """Build and check a codec model from a file's config and tensors."""
    try:
        vq_cfg = VQVAEConfig.from_dict(config["vqvae"])
        vqvae = VQVAE(vq_cfg)
        prior_cfgs = config["priors"]
        if not isinstance(prior_cfgs, list) or len(prior_cfgs) != vq_cfg.levels:
            raise VQCodecError(f"{path} needs {vq_cfg.levels} prior configurations, one per level")
        tile = check_tile(int(config.get("tile", DEFAULT_TILE)), vq_cfg.levels)
    except VQCodecError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise VQCodecError(f"{path} is not a valid codec model (bad configuration: {err!r})") from None
    try:
        vqvae.load_state_dict(sub_tensors(tensors, "vqvae."))
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1].strip()
        raise VQCodecError(f"{path}: the VQ-VAE's tensors do not match its configuration ({detail})") from None
    priors = []
    for level, cfg in enumerate(prior_cfgs):
        if not isinstance(cfg, dict):
            raise VQCodecError(f"{path}: the configuration of prior {level} is not a dictionary")
        try:
            priors.append(build_integer_prior(cfg, sub_tensors(tensors, f"prior{level}."), device=device))
        except VQCodecError as err:
            raise VQCodecError(f"{path}: prior{level}: {err}") from None
        except (TypeError, ValueError) as err:
            raise VQCodecError(f"{path}: prior{level} has a bad configuration ({err})") from None
    return CodecModel(
        vqvae=vqvae.eval().to(device),
        priors=tuple(priors),
        tile=tile,
        fingerprint=fingerprint(tensors),
        name=str(config.get("name", Path(path).stem)),
        device=torch.device(device),
    )


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int, device: str) -> CodecModel:
    """Keyed by the file's identity as well as its path: a re-exported file is read again."""
    kind, config, tensors = load_model(path)
    if kind != "codec":
        raise VQCodecError(f"{path} is a '{kind}' file, not a codec model (build one with 'vqcodec export')")
    return codec_model_from(path, config, tensors, device)


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise VQCodecError(f"device must be 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise VQCodecError("--device cuda was asked for, but no CUDA device is available")
    return device


def load_codec_model(
    model: str | os.PathLike | None = None, device: str = "cpu", model_dirs: tuple[Path, ...] = ()
) -> CodecModel:
    """The codec model named or stored at ``model`` (the default model when None), cached per process."""
    path = resolve_model(model, model_dirs)
    stat = path.stat()
    return _load(str(path.resolve()), stat.st_mtime_ns, stat.st_size, check_device(device))
