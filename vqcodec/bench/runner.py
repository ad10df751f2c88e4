"""The sweep: every image through every operating point, timed, one row per image and point.

Images are the outer loop and operating points the inner one, so each image is read once and the
progress bar's time-left estimate is right after the first image (every image costs the same mix of
fast classical codecs and slow vqcodec points). Before timing, each point encodes and decodes a
64x64 crop once, which loads models and libraries. Times are ``time.perf_counter`` around one
encode call and one decode call (array -> bytes -> array, everything in memory), one call at a
time. The metrics (PSNR and MS-SSIM of vqcodec.metrics, on the 8-bit RGB pixels) are not timed,
so they run afterwards on every CPU; so do the optional perceptual metric (ColorVideoVDP, one image
at a time with torch on every CPU, since one metric object is not meant for several threads) and a
vqcodec point's bits per code (``coding_stats``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vqcodec.bench.classical import ClassicalCodec, quality_text
from vqcodec.bench.coding_stats import CodingStats
from vqcodec.errors import VQCodecError
from vqcodec.metrics import ms_ssim, psnr

if TYPE_CHECKING:
    from vqcodec.zoo.codec_model import CodecModel


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of one codec: how to encode and decode, and optionally how to count its bits."""

    codec: str  # the curve it belongs to: jpeg, webp, ..., vqcodec
    setting: str  # e.g. "quality=10" or "model=default"
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]
    coding_stats: Callable[[np.ndarray, bytes], CodingStats] | None = None  # (pixels, file) -> bits by level


@dataclass(frozen=True)
class Row:
    """The measurements of one image at one operating point."""

    codec: str
    setting: str
    image: str
    width: int
    height: int
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    cvvdp: float | None = None  # ColorVideoVDP in JOD; None where the perceptual metric did not run

    def as_dict(self) -> dict:
        return asdict(self)


def classical_points(codec: ClassicalCodec) -> list[OperatingPoint]:
    """One operating point per value of the codec's quality parameter."""
    def point(q: float) -> OperatingPoint:
        return OperatingPoint(codec.name, f"{codec.param.replace(' ', '_')}={quality_text(q)}",
                              lambda a: codec.encode(a, q), codec.decode)

    return [point(q) for q in codec.qualities]


def vqcodec_point(model: CodecModel, setting: str, with_stats: bool = True, scale: float = 1.0) -> OperatingPoint:
    """The operating point of one codec model (a loaded ``CodecModel``) coding images at ``scale``
    of their size (a rung of the quality ladder)."""
    from vqcodec.bench.coding_stats import coding_stats
    from vqcodec.codec import compress, decompress

    return OperatingPoint(
        "vqcodec", setting, lambda a: compress(a, model, scale=scale), lambda d: np.asarray(decompress(d, model)),
        (lambda a, data: coding_stats(model, a, data)) if with_stats else None)


def load_rgb8(path: Path) -> np.ndarray:
    """An image file as 8-bit RGB (gray is repeated to three channels); 16-bit images are refused,
    since the classical codecs here are compared on 8 bits."""
    from vqcodec.imageio import read_image

    image = read_image(path)
    if image.bit_depth != 8:
        raise VQCodecError(f"{path}: the benchmark compares codecs on 8-bit images, this one is {image.bit_depth}-bit")
    pixels = image.pixels
    return np.ascontiguousarray(np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels)


def encode_decode(point: OperatingPoint, pixels: np.ndarray) -> tuple[bytes, np.ndarray, float, float]:
    """(file, decoded pixels, encode seconds, decode seconds) of one image at one point."""
    t0 = time.perf_counter()
    data = point.encode(pixels)
    t1 = time.perf_counter()
    decoded = point.decode(data)
    t2 = time.perf_counter()
    return data, decoded, t1 - t0, t2 - t1


def score(point: OperatingPoint, name: str, pixels: np.ndarray, data: bytes, decoded: np.ndarray, encode_s: float,
          decode_s: float) -> Row:
    """The row of one image at one point: size, PSNR, MS-SSIM and the times measured."""
    if decoded.shape != pixels.shape or decoded.dtype != np.uint8:
        raise VQCodecError(f"{point.codec} {point.setting} decoded {name} to {decoded.shape} {decoded.dtype}, "
                           f"expected {pixels.shape} uint8")
    h, w = pixels.shape[:2]
    return Row(point.codec, point.setting, name, w, h, len(data), 8 * len(data) / (h * w), psnr(pixels, decoded, 255),
               ms_ssim(pixels, decoded, 255), encode_s, decode_s)


def warm_up(points: Iterable[OperatingPoint], pixels: np.ndarray) -> None:
    """Encode and decode a small crop once per point, so no timed call pays for loading."""
    crop = np.ascontiguousarray(pixels[:64, :64])
    for p in points:
        p.decode(p.encode(crop))


@contextmanager
def all_threads() -> Iterator[None]:
    """Every CPU for untimed work (the coding statistics), then back to the thread count being timed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(before, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class BenchmarkRun:
    """Every row, and the summed coding statistics per vqcodec setting."""

    rows: list[Row]
    coding: dict[str, CodingStats]


def run(images: Sequence[Path], points: Sequence[OperatingPoint], progress: bool = True,
        perceptual: Callable[[np.ndarray, np.ndarray], float] | None = None) -> BenchmarkRun:
    """Measure every image at every point (see the module docstring for the order and the timing);
    ``perceptual`` (original, decoded) -> value fills each row's ``cvvdp``."""
    from tqdm import tqdm

    if not images or not points:
        raise VQCodecError("nothing to measure: no images or no codecs")
    rows: list[Row] = []
    coding: dict[str, CodingStats] = {}
    bar = tqdm(total=len(images) * len(points), desc="benchmark", unit="run", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for i, path in enumerate(images):
                pixels = load_rgb8(path)
                if i == 0:
                    bar.set_postfix_str("warming up")
                    warm_up(points, pixels)
                outputs = []
                for p in points:  # timed, one call at a time
                    bar.set_postfix_str(f"{path.name} {p.codec} {p.setting}")
                    outputs.append(encode_decode(p, pixels))
                bar.set_postfix_str(f"{path.name} metrics")
                scored = [pool.submit(score, p, path.name, pixels, *out) for p, out in zip(points, outputs)]
                with all_threads():
                    for p, (_, decoded, *_), future in zip(points, outputs, scored):  # untimed: every CPU
                        row = future.result()
                        if perceptual is not None:
                            bar.set_postfix_str(f"{path.name} {p.codec} {p.setting} perceptual")
                            row = replace(row, cvvdp=perceptual(pixels, decoded))
                        rows.append(row)
                        bar.update()
                for p, (data, *_) in zip(points, outputs):
                    if p.coding_stats is not None:
                        bar.set_postfix_str(f"{path.name} {p.setting} bits per code")
                        with all_threads():
                            stats = p.coding_stats(pixels, data)
                        coding[p.setting] = coding[p.setting].add(stats) if p.setting in coding else stats
    finally:
        bar.close()
    return BenchmarkRun(rows, coding)
