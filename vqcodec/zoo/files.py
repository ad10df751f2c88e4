"""Model files in safetensors: no pickle, so loading a file never runs code.

A model file holds tensors plus string metadata: ``kind`` (``vqvae``, ``prior-<level>`` or
``codec``) and ``config`` (JSON), so a model can be rebuilt from the file alone. A model's
fingerprint is a hash of its tensors: it goes into every bitstream, so a file is never decoded
with another model than the one that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from vqcodec.errors import VQCodecError


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata)
    os.replace(tmp, path)


def save_model(path: str | Path, tensors: dict[str, torch.Tensor], kind: str, config: dict) -> None:
    """Write a model file: its tensors, its kind and its configuration."""
    atomic_save(tensors, Path(path), {"kind": kind, "config": json.dumps(config, sort_keys=True)})


def load_model(path: str | Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Read (kind, config, tensors) from a model file, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise VQCodecError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        return meta["kind"], json.loads(meta["config"]), tensors
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise VQCodecError(f"{path} is not a vqcodec model file ({err})") from None


def fingerprint(tensors: dict[str, torch.Tensor]) -> bytes:
    """16-byte SHA-256 digest of the tensors (names, dtypes, shapes, bytes): identifies a model."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:16]


def load_vqvae(path: str | Path):  # -> VQVAE (imported late: model files are read without building models)
    """The stage-1 model of a ``vqvae`` model file (a vqvae run's model.safetensors)."""
    from vqcodec.vqvae import VQVAE, VQVAEConfig

    kind, config, tensors = load_model(path)
    if kind != "vqvae":
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
