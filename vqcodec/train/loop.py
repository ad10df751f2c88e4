"""The training loop both stages share: DDP, checkpoints, exact resume, validation, logs.

A stage supplies a model, a dataset indexed by sample number, a loss function and a validation
function; this module does the rest the same way for every stage. Under ``torchrun`` it runs one
process per device with DistributedDataParallel (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vqcodec.errors import VQCodecError
from vqcodec.train.crops import StepSampler
from vqcodec.zoo.files import atomic_save, load_model, save_model


@dataclass
class TrainSettings:
    out: Path
    steps: int
    batch: int
    lr: float
    seed: int = 0
    warmup: int = 200
    checkpoint_every: int = 1000
    validate_every: int = 1000
    workers: int = 1
    max_minutes: float | None = None
    resume: bool = False
    device: str = "cpu"
    stop_at: int | None = None  # end after this step as if interrupted (the schedule still uses ``steps``)


def learning_rate(step: int, s: TrainSettings) -> float:
    """Linear warm-up then cosine decay to 10%: the schedule is a function of the step alone."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment, or (0, 1, device) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank()
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device(device)


def to_device(batch, device: torch.device):
    """A tensor or a tuple of tensors moved to ``device``."""
    if isinstance(batch, (tuple, list)):
        return tuple(t.to(device) for t in batch)
    return batch.to(device)


LossFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
ValidateFn = Callable[[nn.Module], dict[str, float]]


def train(
    model: nn.Module,
    kind: str,
    config: dict,
    dataset: Dataset,
    loss_fn: LossFn,
    validate_fn: ValidateFn | None,
    s: TrainSettings,
) -> nn.Module:
    """Run (or resume) training; writes ``model.safetensors``, ``state.safetensors``, ``log.jsonl``."""
    rank, world, device = init_distributed(s.device)
    if s.batch % world:
        raise VQCodecError(f"batch {s.batch} does not split over {world} processes")
    out = Path(s.out)
    model_path, state_path, log_path = out / "model.safetensors", out / "state.safetensors", out / "log.jsonl"
    torch.manual_seed(s.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    start = 0
    if s.resume:
        if not (model_path.exists() and state_path.exists()):
            raise VQCodecError(f"nothing to resume in {out}")
        _, _, tensors = load_model(model_path)
        model.load_state_dict(tensors)
        start, _ = load_train_state(state_path, optimizer)
    elif model_path.exists():  # every process refuses, so none is left waiting for the others
        raise VQCodecError(f"{out} already holds a run; use --resume to continue it or pick another --out")
    ddp = DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model

    local_batch = s.batch // world
    loader = DataLoader(
        dataset,
        batch_size=local_batch,
        sampler=StepSampler(start, s.steps, local_batch, rank, world),
        num_workers=s.workers,
        persistent_workers=False,
    )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a") if rank == 0 else None
    bar = tqdm(total=s.steps, initial=start, disable=rank != 0, dynamic_ncols=True, desc=kind)
    began, step = time.time(), start

    def save() -> None:
        if rank == 0:
            save_model(model_path, model.state_dict(), kind, config)
            save_train_state(state_path, optimizer, step)

    def write(record: dict) -> None:
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()

    model.train()
    for batch in loader:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, s)
        loss, metrics = loss_fn(ddp, to_device(batch, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        elapsed = time.time() - began
        write({"step": step, "time": round(elapsed, 2), "lr": learning_rate(step - 1, s), **metrics})
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        bar.update(1)
        last = step == s.steps or (s.stop_at is not None and step >= s.stop_at)
        last = last or (s.max_minutes is not None and elapsed > 60 * s.max_minutes)
        if world > 1 and s.max_minutes is not None:
            flag = torch.tensor(float(last), device=device)
            dist.broadcast(flag, src=0)  # rank 0's clock decides, so every process stops together
            last = bool(flag)
        if validate_fn is not None and (step % s.validate_every == 0 or last) and rank == 0:
            model.eval()
            with torch.no_grad():
                val = validate_fn(model)
            model.train()
            write({"step": step, "time": round(elapsed, 2), **{f"val_{k}": v for k, v in val.items()}})
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in val.items()))
        if step % s.checkpoint_every == 0 or last:
            save()
        if last:
            break
    bar.close()
    if log is not None:
        log.close()
    if world > 1:
        dist.barrier()
    return model


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
    atomic_save(tensors, Path(path), meta)


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
