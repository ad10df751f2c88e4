"""Export: a trained VQ-VAE and its float priors -> one codec-model file with integer priors."""

from __future__ import annotations

from pathlib import Path

import torch

from vqcodec.errors import VQCodecError
from vqcodec.priors.registry import integer_twin
from vqcodec.train.code_datasets import CodeTiles, load_codes
from vqcodec.vqvae import LEVEL_NAMES
from vqcodec.zoo.codec_model import CodecModel, load_codec_model
from vqcodec.zoo.files import load_prior, load_vqvae, save_model


def calibration_batches(prior: torch.nn.Module, tiles: CodeTiles, count: int, batch: int = 32) -> list[tuple]:
    """``count`` tiles of a code dataset as the prior's (codes, cond, label) batches."""
    batches = []
    for start in range(0, count, batch):
        items = [tiles[i] for i in range(start, start + batch)]
        codes, *cond, lab = (torch.stack(t) for t in zip(*items))
        batches.append((codes, cond or None, lab if prior.config.num_classes else None))
    return batches


def build_codec_model(
    vqvae_path: str | Path,
    prior_paths: list[str | Path],
    calibration_codes: str | Path,
    out: str | Path,
    name: str,
    calibration_tiles: int = 256,
    description: str = "",
) -> CodecModel:
    """Quantize trained float priors (bottom first) with calibration tiles and write one file."""
    vqvae = load_vqvae(vqvae_path)
    levels = vqvae.config.levels
    if len(prior_paths) != levels:
        raise VQCodecError(f"a {levels}-level model needs {levels} priors ({', '.join(LEVEL_NAMES[levels])})")
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
        net = integer_twin(prior, calibration_batches(prior, tiles, calibration_tiles))
        tensors.update({f"prior{level}.{k}": v for k, v in net.state().items()})
        prior_cfgs.append(prior.config.to_dict())
    config = {"name": name, "tile": tile, "vqvae": vqvae.config.to_dict(), "priors": prior_cfgs}
    if description:
        config["description"] = description
    save_model(out, tensors, "codec", config)
    return load_codec_model(out)
