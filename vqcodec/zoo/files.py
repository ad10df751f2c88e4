"""Model files in safetensors: no pickle, so loading a file never runs code.

A model file holds tensors plus string metadata: ``kind`` (``vqvae``, ``prior-<level>`` or
``codec``) and ``config`` (JSON), so a model can be rebuilt from the file alone. A model's
fingerprint is a hash of its tensors: it goes into every bitstream, so a file is never decoded
with another model than the one that wrote it.

A delta file stores only the tensors that differ from another model, its base (a refit decoder:
a third of a codec model), so a family of models sharing encoder, codebooks and priors costs one
model plus a decoder each. Its metadata names the base by fingerprint (``base``), lists the base's
tensors it drops (``removed``) and records the fingerprint of the whole model (``fingerprint``);
loading finds the base among the known models (``zoo.registry``), merges, and checks that
fingerprint, so a delta loads as exactly the model it was made from or not at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vqcodec.atomic import atomic_write_bytes
from vqcodec.errors import VQCodecError
from vqcodec.zoo.registry import find_by_fingerprint, read_metadata


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write (or replace) a safetensors file through ``atomic_write_bytes``: never half-written,
    and with the permissions the umask gives any new file (safetensors alone writes mode 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata)
    atomic_write_bytes(path, data, force=True)


def save_model(path: str | Path, tensors: dict[str, torch.Tensor], kind: str, config: dict) -> None:
    """Write a model file: its tensors, its kind and its configuration."""
    atomic_save(tensors, Path(path), {"kind": kind, "config": json.dumps(config, sort_keys=True)})


def save_delta_model(
    path: str | Path, tensors: dict[str, torch.Tensor], kind: str, config: dict, base: dict[str, torch.Tensor]
) -> None:
    """Write the model ``tensors`` as a delta of the model ``base`` (whole tensors, as loaded):
    only the tensors that are new or differ are stored."""
    changed = {k: v for k, v in tensors.items() if k not in base or not _same(v, base[k])}
    meta = {"kind": kind, "config": json.dumps(config, sort_keys=True), "base": fingerprint(base).hex(),
            "removed": json.dumps(sorted(set(base) - set(tensors))), "fingerprint": fingerprint(tensors).hex()}
    atomic_save(changed, Path(path), meta)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())


MAX_DELTA_DEPTH = 8  # a delta of a delta of ...: far more than any family needs


def load_model(path: str | Path, _depth: int = 0) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Read (kind, config, tensors) from a model file (a delta merged with its base), with clear
    errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise VQCodecError(f"model file not found: {path}")
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path))
        kind, config = meta["kind"], json.loads(meta["config"])
        if "base" in meta:
            tensors = _merge_base(path, meta, tensors, _depth)
        return kind, config, tensors
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise VQCodecError(f"{path} is not a vqcodec model file ({err})") from None


def _merge_base(path: Path, meta: dict[str, str], delta: dict[str, torch.Tensor], depth: int) -> dict:
    """The whole tensors of a delta file: its base's (found by fingerprint among the known models
    and the delta's own folder), less the removed ones, with the delta's on top."""
    if depth >= MAX_DELTA_DEPTH:
        raise VQCodecError(f"{path}: its chain of base models is deeper than {MAX_DELTA_DEPTH}")
    base_path = find_by_fingerprint(bytes.fromhex(meta["base"]), (path.parent,))
    if base_path is None:
        raise VQCodecError(f"{path} stores only what differs from model {meta['base']}, "
                           "which is not installed (put it in the same folder or in $VQCODEC_MODELS)")
    _, _, base = load_model(base_path, depth + 1)
    removed = set(json.loads(meta["removed"]))
    merged = {k: v for k, v in base.items() if k not in removed} | delta
    if fingerprint(merged).hex() != meta["fingerprint"]:
        raise VQCodecError(f"{path} does not rebuild the model it was made from with base {base_path}")
    return merged


def fingerprint(tensors: dict[str, torch.Tensor]) -> bytes:
    """16-byte SHA-256 digest of the tensors (names, dtypes, shapes, bytes): identifies a model."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:16]


def load_vqvae(path: str | Path):  # -> VQVAE (imported late: model files are read without building models)
    """The stage-1 model of a ``vqvae`` model file (a vqvae run's model.safetensors), or of a codec
    model (its VQ-VAE: the codes that model makes, e.g. to train a prior for it)."""
    from vqcodec.vqvae import VQVAE, VQVAEConfig

    kind, config, tensors = load_model(path)
    if kind in ("codec", "vqvae-rate"):  # a codec model, or a stage 1 trained with its priors
        config = config["vqvae"]
        tensors = {k[len("vqvae."):]: v for k, v in tensors.items() if k.startswith("vqvae.")}
    elif kind != "vqvae":
        raise VQCodecError(f"{path} holds a '{kind}' model, not a vqvae")
    model = VQVAE(VQVAEConfig.from_dict(config))
    model.load_state_dict(tensors)
    return model.eval()


def load_prior(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(float prior, its full config incl. level and tile) from a prior run's model file."""
    from vqcodec.priors.registry import build_float_prior

    kind, config, tensors = load_model(path)
    if not kind.startswith("prior"):
        raise VQCodecError(f"{path} holds a '{kind}' model, not a prior")
    model = build_float_prior(config)
    model.load_state_dict(tensors)
    return model.eval(), config
