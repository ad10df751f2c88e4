"""A codec model: the stage-1 VQ-VAE plus one integer prior per level, in one safetensors file.

Tensor names are prefixed ``vqvae.`` and ``prior{level}.``; the metadata holds the configurations
and the tile size. The file's fingerprint (a hash of every tensor) goes into each bitstream, so a
file is never decoded with a different model than the one that wrote it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import fingerprint, load_model, save_model
from .codes import CodeTiles, load_codes
from .errors import VQCodecError
from .intprior import IntPrior
from .models import load_prior, load_vqvae
from .prior import PriorConfig
from .vqvae import VQVAE, VQVAEConfig

DEFAULT_MODEL = Path(__file__).parent / "weights" / "default.safetensors"


@dataclass
class CodecModel:
    vqvae: VQVAE
    priors: list[IntPrior]  # by level, 0 = bottom
    tile: int  # tile side in bottom-level codes
    fingerprint: bytes
    name: str
    device: torch.device

    @property
    def levels(self) -> int:
        return self.vqvae.config.levels


def build_codec_model(
    vqvae_path: str | Path,
    prior_paths: list[str | Path],
    calibration_codes: str | Path,
    out: str | Path,
    name: str,
    calibration_tiles: int = 256,
) -> CodecModel:
    """Quantize trained float priors (bottom first) with calibration tiles and write one file."""
    vqvae = load_vqvae(vqvae_path)
    if len(prior_paths) != vqvae.config.levels:
        raise VQCodecError(f"a {vqvae.config.levels}-level model needs {vqvae.config.levels} priors")
    maps, labels, _ = load_codes(calibration_codes)
    tensors = {f"vqvae.{k}": v for k, v in vqvae.state_dict().items()}
    prior_cfgs, tile = [], None
    for level, path in enumerate(prior_paths):
        prior, cfg = load_prior(path)
        if cfg.get("level") != level:
            raise VQCodecError(f"{path} is the prior of level {cfg.get('level')}, expected level {level}")
        if tile is not None and cfg["tile"] != tile:
            raise VQCodecError("all priors must be trained with the same --tile")
        tile = cfg["tile"]
        tiles = CodeTiles(maps, labels, level, tile, seed=4242)
        batches = []
        for start in range(0, calibration_tiles, 32):
            items = [tiles[i] for i in range(start, start + 32)]
            codes, *cond, lab = (torch.stack(t) for t in zip(*items))
            batches.append((codes, cond or None, lab if prior.config.num_classes else None))
        net = IntPrior.from_float(prior, batches)
        tensors.update({f"prior{level}.{k}": v for k, v in net.state().items()})
        prior_cfgs.append(prior.config.to_dict())
    config = {"name": name, "tile": tile, "vqvae": vqvae.config.to_dict(), "priors": prior_cfgs}
    save_model(out, tensors, "codec", config)
    return load_codec_model(out)


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> CodecModel:
    kind, config, tensors = load_model(path)
    if kind != "codec":
        raise VQCodecError(f"{path} is a '{kind}' file, not a codec model (build one with 'vqcodec export')")
    try:
        vqvae = VQVAE(VQVAEConfig.from_dict(config["vqvae"]))
        vqvae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("vqvae.")})
        priors = []
        for level, cfg in enumerate(config["priors"]):
            prefix = f"prior{level}."
            sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            priors.append(IntPrior(PriorConfig.from_dict(cfg), sub, device=device))
    except (KeyError, RuntimeError, TypeError) as err:
        raise VQCodecError(f"{path} is not a valid codec model ({err})") from None
    return CodecModel(
        vqvae=vqvae.eval().to(device),
        priors=priors,
        tile=int(config["tile"]),
        fingerprint=fingerprint(tensors),
        name=config.get("name", Path(path).stem),
        device=torch.device(device),
    )


def load_codec_model(path: str | Path | None = None, device: str = "cpu") -> CodecModel:
    """The codec model at ``path`` (the embedded default model when None), cached per process."""
    if device == "cuda" and not torch.cuda.is_available():
        raise VQCodecError("--device cuda was asked for, but no CUDA device is available")
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise VQCodecError(f"model file not found: {path}")
    return _load(str(path.resolve()), device)
