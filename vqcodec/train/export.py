"""Export: a trained VQ-VAE and its float priors -> one codec-model file with integer priors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from vqcodec.coding.tiles import check_tile
from vqcodec.errors import VQCodecError
from vqcodec.priors.pixelcnn import PriorConfig
from vqcodec.priors.registry import integer_twin
from vqcodec.priors.uncoded import UncodedConfig
from vqcodec.train.code_datasets import CodeTiles, load_code_sets
from vqcodec.vqvae import LEVEL_NAMES
from vqcodec.zoo.codec_model import CodecModel, load_codec_model, sub_tensors
from vqcodec.zoo.files import fingerprint, load_model, load_prior, load_vqvae, save_delta_model, save_model
from vqcodec.zoo.registry import find_by_fingerprint


def calibration_batches(prior: torch.nn.Module, tiles: CodeTiles, count: int, batch: int = 32) -> list[tuple]:
    """``count`` tiles of a code dataset as the prior's (codes, cond, label) batches."""
    batches = []
    for start in range(0, count, batch):
        items = [tiles[i] for i in range(start, start + batch)]
        codes, *cond, lab = (torch.stack(t) for t in zip(*items))
        batches.append((codes, cond or None, lab if prior.config.num_classes else None))
    return batches


def prior_to_export(path: str | Path, act_bits: int | None = None) -> tuple[torch.nn.Module, dict]:
    """``load_prior``, with the integer width of a multi-pass prior set to ``act_bits`` (8 or 16; None:
    the run's): the float prior is the same, only its quantization differs."""
    prior, cfg = load_prior(path)
    if act_bits is not None:
        if prior.config.to_dict().get("arch") != "multipass":
            raise VQCodecError(f"--act-bits sets the width of multi-pass priors; {path} is not one")
        prior.config = replace(prior.config, act_bits=act_bits)
    return prior, cfg


def quantized_prior(
    path: str | Path, prior: torch.nn.Module, cfg: dict, level: int, tile: int, maps: list, labels, count: int,
) -> dict[str, torch.Tensor]:
    """The model-file tensors (``prior{level}.*``) of the float ``prior`` (with its run's ``cfg``, as
    ``load_prior`` read them from ``path``), quantized on ``count`` tiles of a code dataset."""
    if cfg.get("level") != level:
        raise VQCodecError(f"{path} is the prior of level {cfg.get('level')}, expected level {level}")
    if cfg["tile"] != tile:
        raise VQCodecError(f"{path} was trained on tiles of {cfg['tile']} codes; the model codes tiles of {tile}")
    tiles = CodeTiles(maps, labels, level, tile, seed=4242)
    net = integer_twin(prior, calibration_batches(prior, tiles, count))
    return {f"prior{level}.{k}": v for k, v in net.state().items()}


def build_codec_model(
    vqvae_path: str | Path,
    prior_paths: list[str | Path],
    calibration_codes: str | Path | Sequence[str | Path],
    out: str | Path,
    name: str,
    calibration_tiles: int = 256,
    description: str = "",
    act_bits: int | None = None,
    tile: int | None = None,
) -> CodecModel:
    """Quantize trained float priors (bottom first) with calibration tiles and write one file;
    ``act_bits`` as in ``prior_to_export``. The model codes tiles of the side its priors were
    trained on, or of ``tile`` when every prior is multi-pass (their context is a fixed window, so
    they serve any tile; each is calibrated on tiles of its own training side)."""
    vqvae = load_vqvae(vqvae_path)
    levels = vqvae.config.levels
    if len(prior_paths) != levels:
        raise VQCodecError(f"a {levels}-level model needs {levels} priors ({', '.join(LEVEL_NAMES[levels])})")
    maps, labels, _ = load_code_sets(calibration_codes)
    tensors = {f"vqvae.{k}": v for k, v in vqvae.state_dict().items()}
    prior_cfgs, trained = [], set()
    for level, path in enumerate(prior_paths):
        prior, cfg = prior_to_export(path, act_bits)
        if tile is not None and prior.config.to_dict().get("arch") != "multipass":
            raise VQCodecError(f"--tile: {path} is not a multi-pass prior, so it codes only tiles of its training")
        trained.add(cfg["tile"])
        tensors.update(quantized_prior(path, prior, cfg, level, cfg["tile"], maps, labels, calibration_tiles))
        prior_cfgs.append(prior.config.to_dict())
    if tile is None:
        if len(trained) > 1:
            raise VQCodecError("all priors must be trained with the same --tile (or give the model's --tile: "
                               "multi-pass priors serve any)")
        tile = trained.pop()
    tile = check_tile(tile, levels)
    config = {"name": name, "tile": tile, "vqvae": vqvae.config.to_dict(), "priors": prior_cfgs}
    if description:
        config["description"] = description
    save_model(out, tensors, "codec", config)
    return load_codec_model(out)


def _stage1_codes_part(tensors: dict[str, torch.Tensor], dropped: int) -> dict[str, torch.Tensor]:
    """The tensors that decide the codes of the levels from ``dropped`` up: encoders, quantizer
    inputs, conditioning, codebooks (a dropped level's own modules only predict it)."""
    keep = ("encoders.", "pre_quant.", "cond_decoders.", "quantizers.")
    skip = tuple(f"{m}.{lvl}." for m in ("pre_quant", "cond_decoders", "quantizers") for lvl in range(dropped))
    return {k: v for k, v in tensors.items()
            if k.startswith(keep) and not k.startswith(skip) and not k.endswith(("restarts", "initialized"))}


def build_refit_codec_model(
    base: str | Path, vqvae_path: str | Path | None, out: str | Path, name: str, description: str = "",
    delta: bool = False, priors: dict[int, Path] | None = None,
    calibration_codes: str | Path | Sequence[str | Path] | None = None,
    calibration_tiles: int = 128, wavefront_attention: bool = False, tile: int | None = None,
    act_bits: int | None = None,
) -> CodecModel:
    """A codec model from a ``vqcodec train vqvae --refit base`` run: its VQ-VAE with ``base``'s
    integer priors, which stay exact because the refit never changed how images become codes
    (checked here, tensor by tensor); a level the refit dropped gets the uncoded prior. Without a
    VQ-VAE it is ``base``'s. ``priors`` (level -> a ``train prior --refit base`` run's model) replace
    ``base``'s priors of those levels, quantized on ``calibration_codes``. ``wavefront_attention``
    limits the attention of ``base``'s priors to the wavefront (``PriorConfig.attention_wavefront``),
    their integer weights unchanged, so they decode in far fewer steps. With ``delta`` the file
    stores only what differs from ``base`` (``zoo.files``), which must then be installed where the
    file will be looked for (its folder, $VQCODEC_MODELS or the shipped ones). ``tile`` sets the new
    model's default tile side (``base``'s by default); only priors that do not depend on the tile
    they were trained on (multi-pass ones: their context is a fixed window) may be given another.
    ``act_bits`` sets the integer width of the new multi-pass priors (``prior_to_export``)."""
    kind, base_cfg, base_tensors = load_model(base)
    if kind != "codec":
        raise VQCodecError(f"{base} is a '{kind}' file; --refit-of needs the codec model the decoder was refit from")
    priors = priors or {}
    if priors and calibration_codes is None:
        raise VQCodecError("--calibration is needed to quantize the priors")
    vqvae = load_vqvae(vqvae_path if vqvae_path is not None else base)
    new = vqvae.state_dict()
    old = sub_tensors(base_tensors, "vqvae.")
    cfg = vqvae.config
    old_codes, new_codes = _stage1_codes_part(old, cfg.dropped_levels), _stage1_codes_part(new, cfg.dropped_levels)
    same = old_codes.keys() == new_codes.keys() and all(torch.equal(old_codes[k], new_codes[k]) for k in old_codes)
    base_vq = base_cfg["vqvae"]
    if not same or any(base_vq.get(k) != getattr(cfg, k) for k in ("levels", "num_codes", "code_dim", "hidden")):
        raise VQCodecError(f"{vqvae_path} does not code images as {base} does: it was not refit from it")
    if cfg.dropped_levels < base_vq.get("dropped_levels", 0):
        raise VQCodecError(f"{vqvae_path} codes a level that {base} does not")
    uncoded = [lvl for lvl in priors if not cfg.dropped_levels <= lvl < cfg.levels]
    if uncoded:
        raise VQCodecError(f"level {LEVEL_NAMES[cfg.levels][uncoded[0]]} is not coded by this model: it takes no prior")
    raster = [lvl for lvl, c in enumerate(base_cfg["priors"]) if lvl not in priors and lvl >= cfg.dropped_levels
              and c.get("attention_every") and not c.get("attention_wavefront")]
    if wavefront_attention and not raster:
        raise VQCodecError(f"--wavefront-attention: {base} has no prior left whose attention runs in raster order")
    maps, labels, _ = load_code_sets(calibration_codes) if priors else (None, None, None)
    model_tile = check_tile(tile, cfg.levels) if tile is not None else base_cfg["tile"]
    if model_tile != base_cfg["tile"]:
        kept = [lvl for lvl, c in enumerate(base_cfg["priors"]) if lvl not in priors and lvl >= cfg.dropped_levels
                and c.get("arch", "gated-pixelcnn") != "multipass"]
        if kept:
            raise VQCodecError(f"--tile {model_tile}: {base}'s prior of level {LEVEL_NAMES[cfg.levels][kept[0]]} "
                               f"was made for tiles of {base_cfg['tile']}; replace it with a multi-pass prior")
    tensors = {f"vqvae.{k}": v for k, v in new.items()}
    prior_cfgs = []
    for level, prior_cfg in enumerate(base_cfg["priors"]):
        if level < cfg.dropped_levels:
            prior_cfgs.append(UncodedConfig().to_dict())
            continue
        if level in priors:
            prior, cfg_run = prior_to_export(priors[level], act_bits)
            prior_cfgs.append(prior.config.to_dict())
            multipass = prior.config.to_dict().get("arch") == "multipass"
            if cfg_run["tile"] != model_tile and not multipass:
                raise VQCodecError(f"{priors[level]} was trained on tiles of {cfg_run['tile']} codes; the model "
                                   f"codes tiles of {model_tile}")
            tensors.update(quantized_prior(priors[level], prior, cfg_run, level, cfg_run["tile"], maps, labels,
                                           calibration_tiles))
            continue
        prior_cfgs.append(prior_cfg)
        tensors.update({k: v for k, v in base_tensors.items() if k.startswith(f"prior{level}.")})
        if wavefront_attention and level in raster:
            prior_cfgs[-1] = {**prior_cfg, "attention_wavefront": True}
            reach = PriorConfig.from_dict(prior_cfgs[-1]).stack_reach
            tensors[f"prior{level}.attn.reach"] = torch.tensor(float(reach), dtype=torch.float64)
    if fingerprint(tensors) == fingerprint(base_tensors):
        raise VQCodecError(f"nothing differs from {base}: this would be the same model")
    config = {"name": name, "tile": model_tile, "vqvae": cfg.to_dict(), "priors": prior_cfgs}
    if description:
        config["description"] = description
    if not delta:
        save_model(out, tensors, "codec", config)
        return load_codec_model(out)
    if find_by_fingerprint(fingerprint(base_tensors), (Path(out).parent,)) is None:
        raise VQCodecError(f"--delta: {base} must be installed (in {Path(out).parent}, $VQCODEC_MODELS or the "
                           "shipped models), or the delta cannot be loaded")
    save_delta_model(out, tensors, "codec", config, base_tensors)
    return load_codec_model(out)

