"""The classical codecs vqcodec is compared with, each swept over one quality parameter.

Settings follow ``shared/notes/classical-kodak.md`` (measured on this machine kind), because a
comparison is only as fair as its anchors: JPEG 4:2:0 with optimized Huffman tables, WebP at its
slowest and best ``method=6``, AVIF 4:2:0 at ``speed=6``, JPEG 2000 with the irreversible 9/7
wavelet and colour transform (Pillow's default 5/3 without it is ~2.7 dB worse) in ``quality_mode='dB'``
(a quality target, so the rate varies per image as it does for every other codec here), and JPEG XL
at effort 7. Each sweep spans about 0.1-1.5 bpp on Kodak-like photos. Every codec works in memory:
8-bit RGB array -> file bytes -> 8-bit RGB array, so bpp counts the whole file, container included.
"""

from __future__ import annotations

import io
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, features

from vqcodec.errors import VQCodecError

CODEC_NAMES: tuple[str, ...] = ("jpeg", "webp", "avif", "jp2", "jxl")

# 7 points each, from ~0.1 to ~1.5 bpp on 768x512 photos
DEFAULT_QUALITIES: dict[str, tuple[float, ...]] = {
    "jpeg": (3, 6, 10, 16, 27, 45, 75),
    "webp": (0, 5, 15, 30, 50, 70, 82),
    "avif": (8, 18, 28, 38, 48, 58, 70),
    "jp2": (24, 26, 28, 30.5, 32.5, 34.5, 36.5),
    "jxl": (25, 10, 6, 4, 2.8, 2, 1.5),
}


@dataclass(frozen=True)
class ClassicalCodec:
    """A lossy codec and the sweep of its quality parameter."""

    name: str  # short key: jpeg, webp, avif, jp2, jxl
    label: str  # for plots and tables
    description: str  # library and settings, for the result file
    param: str  # the swept parameter: quality, distance, target dB
    qualities: tuple[float, ...]
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]

    def with_qualities(self, qualities: tuple[float, ...]) -> ClassicalCodec:
        return replace(self, qualities=tuple(qualities))


def _pil_save(pixels: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _pil_load(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _pillow_codecs(threads: int) -> dict[str, tuple[str, ClassicalCodec]]:
    """{name: (Pillow feature that must be present, codec)}."""
    return {
        "jpeg": ("jpg", ClassicalCodec(
            "jpeg", "JPEG", "Pillow JPEG (libjpeg-turbo), 4:2:0, optimize=True", "quality", DEFAULT_QUALITIES["jpeg"],
            lambda a, q: _pil_save(a, "JPEG", quality=int(q), subsampling=2, optimize=True), _pil_load)),
        "webp": ("webp", ClassicalCodec(
            "webp", "WebP", "Pillow WebP (libwebp), lossy, method=6", "quality", DEFAULT_QUALITIES["webp"],
            lambda a, q: _pil_save(a, "WEBP", quality=int(q), method=6), _pil_load)),
        "avif": ("avif", ClassicalCodec(
            "avif", "AVIF", f"Pillow AVIF (libavif, aom encoder), 4:2:0, speed=6, max_threads={threads}",
            "quality", DEFAULT_QUALITIES["avif"],
            lambda a, q: _pil_save(a, "AVIF", quality=int(q), speed=6, subsampling="4:2:0", max_threads=threads),
            _pil_load)),
        "jp2": ("jpg_2000", ClassicalCodec(
            "jp2", "JPEG 2000", "Pillow JPEG 2000 (OpenJPEG), .jp2, irreversible 9/7, mct=1, quality_mode='dB'",
            "target dB", DEFAULT_QUALITIES["jp2"],
            lambda a, q: _pil_save(a, "JPEG2000", quality_mode="dB", quality_layers=[float(q)], irreversible=True,
                                   mct=1),
            _pil_load)),
    }


def classical_codecs(threads: int = 1) -> tuple[dict[str, ClassicalCodec], dict[str, str]]:
    """(available codecs by name, {name: why it is unavailable}) with ``threads`` for the libraries
    that take a thread count (libavif, libjxl; the others are single-threaded here)."""
    available: dict[str, ClassicalCodec] = {}
    missing: dict[str, str] = {}
    for name, (feature, codec) in _pillow_codecs(threads).items():
        if features.check(feature):
            available[name] = codec
        else:
            missing[name] = f"this Pillow was built without {feature}"
    if "avif" in available:
        try:  # Pillow's AVIF decoder takes its thread count from this module variable
            from PIL import AvifImagePlugin

            AvifImagePlugin.DEFAULT_MAX_THREADS = threads
        except ImportError:
            pass
    try:
        import imagecodecs

        if not imagecodecs.JPEGXL.available:
            raise ImportError("imagecodecs was built without JPEG XL")
        available["jxl"] = ClassicalCodec(
            "jxl", "JPEG XL", f"imagecodecs JPEG XL (libjxl), effort=7, numthreads={threads}", "distance",
            DEFAULT_QUALITIES["jxl"],
            lambda a, q: imagecodecs.jpegxl_encode(a, effort=7, distance=float(q), numthreads=threads),
            lambda d: np.asarray(imagecodecs.jpegxl_decode(d, numthreads=threads)))
    except (ImportError, AttributeError) as err:
        missing["jxl"] = str(err) or "imagecodecs has no JPEG XL"
    return {n: available[n] for n in CODEC_NAMES if n in available}, missing


def parse_qualities(specs: tuple[str, ...] | list[str], known: tuple[str, ...] = CODEC_NAMES) -> dict[str, tuple]:
    """``["jpeg=10,50,90", ...]`` -> {"jpeg": (10, 50, 90)}; a VQCodecError names a bad spec."""
    out: dict[str, tuple] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip()
        if name == "vqcodec":
            raise VQCodecError("vqcodec's operating points are its models: use --model, not --quality")
        if name not in known or not values.strip():
            raise VQCodecError(f"--quality takes CODEC=Q1,Q2,... with CODEC one of {', '.join(known)}, not '{spec}'")
        try:
            out[name] = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise VQCodecError(f"--quality {spec}: the values must be numbers") from None
    return out


def quality_text(value: float) -> str:
    """30.0 -> '30', 2.5 -> '2.5'."""
    return f"{value:g}"


def library_versions() -> dict[str, str]:
    """Versions of everything a result depends on, for the record."""
    import PIL

    out = {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__}
    for label, feature in (("libjpeg-turbo", "libjpeg_turbo"), ("libwebp", "webp"), ("openjpeg", "jpg_2000"),
                           ("libavif", "avif")):
        try:
            version = features.version(feature)
        except Exception:  # a feature this Pillow does not know only leaves its version out
            version = None
        if version:
            out[label] = version
    try:
        import imagecodecs

        out["imagecodecs"] = imagecodecs.__version__
        out["libjxl"] = imagecodecs.jpegxl_version().removeprefix("libjxl ")
    except Exception:  # no imagecodecs or no JPEG XL in it: nothing to record
        pass
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out
