"""Finding codec models by name or by fingerprint: the shipped ones and the user's folders.

Shipped models live in ``vqcodec/zoo/weights`` and are described by ``models.json`` there (name,
fingerprint, one-line description, Kodak figures) with the quality ladder: its rungs, each a model
and the scale it codes images at (``vqcodec.resample``), with their Kodak figures. The ladder is
what ``--quality`` picks from: quality 1 is the smallest file, N the best picture; the default rung
is the default model at scale 1. A model off the ladder stays shipped, so files it wrote still decode.
A user adds models by putting codec-model files
in a folder named by ``$VQCODEC_MODELS`` (several folders separated by ``os.pathsep``) or passed
as ``--model-dir``; a model's name is its file stem. Names are looked up in the given folders
first, then ``$VQCODEC_MODELS``, then the shipped models. A file's fingerprint finds the model
that wrote it, so ``decompress`` needs no ``--model``.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from vqcodec.errors import VQCodecError

SHIPPED_DIR = Path(__file__).parent / "weights"
MANIFEST = SHIPPED_DIR / "models.json"
DEFAULT_MODEL = "default"  # a name that always means the manifest's default model
ENV_VAR = "VQCODEC_MODELS"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ModelEntry:
    """One codec model the registry can find."""

    name: str
    path: Path
    fingerprint: str  # hex
    levels: int
    size: int  # bytes of the file
    description: str
    shipped: bool
    kodak: dict | None = None  # {"bpp", "psnr", "ms_ssim"} measured on Kodak at scale 1, for shipped models


@dataclass(frozen=True)
class Rung:
    """One point of the quality ladder: a shipped model coding images at ``scale`` times their size."""

    quality: int  # 1 = smallest files
    model: str
    scale: float
    kodak: dict | None = None  # {"bpp", "psnr", "ms_ssim"} measured on Kodak

    @property
    def name(self) -> str:
        """What ``--quality`` also accepts: the model's name, with ``@scale`` unless the scale is 1."""
        return self.model if self.scale == 1 else f"{self.model}@{self.scale:g}"


def model_dirs(extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Folders searched for models, in order: ``extra``, then ``$VQCODEC_MODELS``, then the shipped ones."""
    env = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return [*(Path(p) for p in extra), *(Path(p) for p in env), SHIPPED_DIR]


@functools.lru_cache(maxsize=1)
def _manifest_file() -> dict:
    return json.loads(MANIFEST.read_text())


def _manifest() -> dict[str, dict]:
    return _manifest_file()["models"]


def default_model_name() -> str:
    """The shipped model that compresses when no model or quality is asked for."""
    return str(_manifest_file()["default"])


LADDERS = {"default": "ladder", "fast": "fast_ladder"}  # ladder name -> its key in models.json


def ladder(which: str = "default") -> list[Rung]:
    """A shipped quality ladder, quality 1 (smallest files) first: the manifest's rungs in order.
    ``"fast"``: the ladder of the multi-pass priors, nearly the same pictures in about a third of the
    decode time for about 5 % more bits on Kodak (docs/models.md); empty where the manifest has none."""
    if which not in LADDERS:
        raise VQCodecError(f"unknown ladder {which!r} (known: {', '.join(LADDERS)})")
    return [Rung(q, str(r["model"]), float(r["scale"]), r.get("kodak"))
            for q, r in enumerate(_manifest_file().get(LADDERS[which], []), start=1)]


def default_quality() -> int:
    """The quality of the default rung: the default model at scale 1."""
    name = default_model_name()
    return next(r.quality for r in ladder() if r.name == name)


def rung_of(model_fingerprint: str, width: int, height: int, coded: tuple[int, int] | None) -> Rung | None:
    """The rung a file was written at: its model's (by fingerprint) whose scale gives its coded size."""
    from vqcodec.resample import coded_size

    fingerprints = {n: e["fingerprint"] for n, e in _manifest().items()}
    return next((r for which in LADDERS for r in ladder(which) if fingerprints.get(r.model) == model_fingerprint
                 and coded_size(width, height, r.scale) == (coded or (width, height))), None)


def choose_rung(model, quality: int | str | None, fast: bool = False) -> tuple[object, float]:
    """What to compress with, as (model spec, scale): ``model`` (any spec, None for the default) at
    scale 1, or the rung of ``quality`` (on the fast ladder with ``fast``); never both."""
    if fast and model is not None:
        raise VQCodecError("give --fast or a model, not both")
    if quality is None and not fast:
        return model, 1.0
    if model is not None:
        raise VQCodecError("give a quality or a model, not both")
    rung = rung_for_quality(quality) if quality is not None else None
    rung = fast_rung(rung) if fast else rung
    return rung.model, rung.scale


def fast_rung(rung: Rung | None) -> Rung:
    """The fast ladder's rung for ``rung`` (None: the default quality): the one of its quality, or
    ``rung`` itself when it is a fast rung already (named so)."""
    fast = ladder("fast")
    if not fast:
        raise VQCodecError("this vqcodec ships no fast ladder")
    if rung is not None and rung in fast:
        return rung
    return fast[(rung.quality if rung is not None else default_quality()) - 1]


def rung_for_quality(quality: int | str) -> Rung:
    """The rung of a quality: 1..N on the ladder, or a rung's name on any ladder (``"default"``:
    the default rung)."""
    steps = ladder()
    names = ", ".join(r.name for r in steps)
    text = str(quality).strip()
    if text.lstrip("-").isdigit():
        q = int(text)
        if not 1 <= q <= len(steps):
            raise VQCodecError(f"quality must be 1 (smallest files) to {len(steps)} (best pictures), not {q}; "
                               f"or one of the names {names}")
        return steps[q - 1]
    if text == DEFAULT_MODEL:
        text = default_model_name()
    rung = next((r for which in LADDERS for r in ladder(which) if r.name == text), None)
    if rung is None:
        raise VQCodecError(f"unknown quality '{text}': give 1 to {len(steps)} or one of {names} "
                           "(any other model: --model)")
    return rung


@functools.lru_cache(maxsize=256)
def _describe(path: str, mtime_ns: int, size: int) -> tuple[str, int, str]:
    """(fingerprint hex, levels, description) of a codec-model file, cached by the file's identity.
    A delta file's recorded fingerprint is taken as it is (loading checks it): finding its base
    must not need the delta's own tensors."""
    from vqcodec.zoo.files import fingerprint, load_model

    meta = read_metadata(Path(path))
    if "base" in meta and "fingerprint" in meta:
        try:
            kind, config, fp = meta.get("kind"), json.loads(meta.get("config", "{}")), meta["fingerprint"]
        except ValueError:
            raise VQCodecError(f"{path} is not a vqcodec model file (bad configuration)") from None
    else:
        kind, config, tensors = load_model(path)
        fp = fingerprint(tensors).hex()
    if kind != "codec":
        raise VQCodecError(f"{path} is a '{kind}' file, not a codec model")
    levels = int(config.get("vqvae", {}).get("levels", 0))
    return fp, levels, str(config.get("description") or config.get("name", ""))


def _entry(path: Path, shipped: bool) -> ModelEntry:
    stat = path.stat()
    info = _manifest().get(path.stem) if shipped else None
    if info is not None:  # shipped: the manifest saves hashing every file (a test keeps it honest)
        meta = read_metadata(path)
        levels = int(json.loads(meta.get("config", "{}")).get("vqvae", {}).get("levels", 0))
        return ModelEntry(path.stem, path, info["fingerprint"], levels, stat.st_size, info["description"], True,
                          info.get("kodak"))
    fp, levels, description = _describe(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return ModelEntry(path.stem, path, fp, levels, stat.st_size, description, shipped)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A model file's metadata alone (no tensors read, torch not needed)."""
    try:
        with safe_open(str(path), framework="numpy") as f:  # metadata only: no need to import torch
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise VQCodecError(f"{path} is not a vqcodec model file ({err})") from None


def list_models(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[ModelEntry]:
    """Every model found (a name hidden by an earlier folder's model of the same name is left out).
    Files in user folders that are not codec models are skipped."""
    seen: dict[str, ModelEntry] = {}
    for folder in model_dirs(extra_dirs):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*" + SUFFIX)):
            if path.stem in seen:
                continue
            try:
                seen[path.stem] = _entry(path, folder == SHIPPED_DIR)
            except VQCodecError:
                if folder == SHIPPED_DIR:
                    raise
    return list(seen.values())


def model_bytes(entry: ModelEntry, entries: Sequence[ModelEntry]) -> int | None:
    """Bytes of the tensors of the whole model a file stands for: a plain file's own; a delta's own on
    top of its base's (found by fingerprint among ``entries``) less those it removes. None when a
    base is missing. Read from the files' headers alone: no tensor is read, torch is not needed."""
    by_fingerprint = {e.fingerprint: e.path for e in entries}
    path: Path | None = entry.path
    chain: list[tuple[dict[str, int], set[str]]] = []  # (tensor bytes, removed names), the entry's first
    while path is not None:
        meta = read_metadata(path)
        chain.append((_tensor_bytes(path), set(json.loads(meta.get("removed", "[]")))))
        if "base" not in meta:
            break
        path = by_fingerprint.get(meta["base"])
        if path is None or len(chain) > len(by_fingerprint):  # a missing base, or a loop
            return None
    sizes: dict[str, int] = {}
    for own, removed in reversed(chain):  # the plain model first, each delta on top
        sizes = {k: v for k, v in sizes.items() if k not in removed} | own
    return sum(sizes.values())


def _tensor_bytes(path: Path) -> dict[str, int]:
    """{tensor name: bytes} from a safetensors file's header (8 bytes of length, then JSON)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > os.fstat(f.fileno()).st_size:
                raise ValueError("its header is longer than the file")
            header = json.loads(f.read(length))
        return {k: int(v["data_offsets"][1]) - int(v["data_offsets"][0]) for k, v in header.items()
                if k != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as err:
        raise VQCodecError(f"{path} is not a vqcodec model file ({err})") from None


def find_by_fingerprint(fp: bytes, extra_dirs: Sequence[str | os.PathLike] = ()) -> Path | None:
    """The file of the model with fingerprint ``fp``, or None when no known model has it."""
    return next((e.path for e in list_models(extra_dirs) if e.fingerprint == fp.hex()), None)


def resolve_model(model: str | os.PathLike | None, extra_dirs: Sequence[str | os.PathLike] = ()) -> Path:
    """The file for ``model``: a path to a file, a model name, or None for the default model."""
    if model is None or os.fspath(model) == DEFAULT_MODEL:
        model = default_model_name()
    path = Path(model)
    if path.is_file():
        return path
    name = os.fspath(model)
    if path.suffix == SUFFIX or os.sep in name or (os.altsep and os.altsep in name):
        raise VQCodecError(f"model file not found: {name}")
    for folder in model_dirs(extra_dirs):
        candidate = folder / (name + SUFFIX)
        if candidate.is_file():
            return candidate
    known = ", ".join(e.name for e in list_models(extra_dirs))
    raise VQCodecError(f"no model named '{name}' (known: {known}); give a model name or a codec-model file")
