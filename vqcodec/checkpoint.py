"""Weights and training state in safetensors files: no pickle, so loading a file never runs code.

A model file holds tensors plus string metadata: ``kind`` (what the tensors are) and ``config``
(JSON), so a model can be rebuilt from the file alone. Training state (optimizer moments, step,
RNG) goes in a second file beside it so a run can resume exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import VQCodecError


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata)
    os.replace(tmp, path)


def save_model(path: str | Path, tensors: dict[str, torch.Tensor], kind: str, config: dict) -> None:
    """Write a model file: its tensors, its kind and its configuration."""
    _atomic_save(tensors, Path(path), {"kind": kind, "config": json.dumps(config, sort_keys=True)})


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


def save_train_state(
    path: str | Path, optimizer: torch.optim.Optimizer, step: int, extra: dict | None = None
) -> None:
    """Optimizer moments, step and the global torch RNG, so ``--resume`` continues exactly."""
    sd = optimizer.state_dict()
    tensors = {"rng": torch.get_rng_state()}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"opt.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = {"step": str(step), "param_groups": json.dumps(sd["param_groups"]), "extra": json.dumps(extra or {})}
    _atomic_save(tensors, Path(path), meta)


def load_train_state(path: str | Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore what ``save_train_state`` wrote; returns (step, extra)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise VQCodecError(f"cannot read training state {path}: {err}") from None
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng"])
    return int(meta["step"]), json.loads(meta["extra"])
