"""Rate-distortion and speed of classical codecs and vqcodec on a folder of images.

Usage:
    python benchmarks/rd.py --data ../shared/datasets/kodak [--codecs jpeg,webp,jp2,avif,jxl,vqcodec]
                            [--model PATH] [--out results.json] [--max-images N] [--threads 1]
                            [--quality jpeg=10,50,90 ...]

Every classical codec is swept over a quality parameter chosen to cover about 0.1-1.5 bpp on Kodak;
each image is encoded and decoded in memory. bpp counts the whole file (container included) per
pixel; PSNR is RGB PSNR over all channels, MS-SSIM is vqcodec.metrics.ms_ssim (pytorch-msssim
convention); both are averaged over images (mean of per-image values). Curves are the per-quality
means, interpolated linearly in bpp at the target rates ("–" outside the swept range). vqcodec is a
fixed-rate codec: one operating point per model. Times are time.perf_counter() around one encode or
decode call, medians over all images (and all quality points for classical codecs).

Markdown tables go to stdout, progress to stderr, every per-image number to --out (JSON).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, features

from vqcodec.metrics import ms_ssim, psnr

TARGETS: tuple[float, ...] = (0.10, 0.15, 0.25, 0.40, 0.50, 0.75, 1.0)
MS_SSIM_TARGET = 0.25
IMAGE_EXTS = {".png", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
DASH = "–"


# --- classical codecs ----------------------------------------------------------------------------


@dataclass
class Codec:
    """A lossy codec swept over one quality parameter."""

    name: str
    settings: str
    param: str
    qualities: list[float]
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]


def _pil_save(arr: np.ndarray, fmt: str, **opts: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **opts)
    return buf.getvalue()


def _pil_load(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im)


def make_codecs(threads: int) -> dict[str, Codec]:
    """The classical codecs with the settings of shared/notes/classical-kodak.md."""
    codecs = {
        "jpeg": Codec(
            "jpeg",
            "Pillow JPEG (libjpeg-turbo), 4:2:0, optimize=True",
            "quality",
            [2, 4, 7, 10, 15, 25, 40, 55, 70, 80],
            lambda a, q: _pil_save(a, "JPEG", quality=int(q), subsampling=2, optimize=True),
            _pil_load,
        ),
        "webp": Codec(
            "webp",
            "Pillow WebP (libwebp), lossy, method=6",
            "quality",
            [0, 3, 6, 10, 20, 35, 50, 65, 75, 82],
            lambda a, q: _pil_save(a, "WEBP", quality=int(q), method=6),
            _pil_load,
        ),
        "jp2": Codec(
            "jp2",
            "Pillow JPEG 2000 (OpenJPEG), .jp2 file, irreversible 9/7, mct=1, quality_mode='dB'",
            "target dB",
            [20, 21.5, 23, 25, 27, 29, 31, 33, 35, 36.5],
            lambda a, q: _pil_save(
                a, "JPEG2000", quality_mode="dB", quality_layers=[float(q)], irreversible=True, mct=1
            ),
            _pil_load,
        ),
        "avif": Codec(
            "avif",
            f"Pillow AVIF (libavif/aom encode, dav1d decode), 4:2:0, speed=6, max_threads={threads}",
            "quality",
            [2, 8, 15, 25, 35, 45, 55, 62, 70],
            lambda a, q: _pil_save(a, "AVIF", quality=int(q), speed=6, subsampling="4:2:0", max_threads=threads),
            _pil_load,
        ),
    }
    try:
        import imagecodecs

        codecs["jxl"] = Codec(
            "jxl",
            f"imagecodecs JPEG XL (libjxl), effort=7, numthreads={threads}",
            "distance",
            [25, 15, 10, 7, 5, 3.5, 2.5, 1.8, 1.4],
            lambda a, q: imagecodecs.jpegxl_encode(a, effort=7, distance=float(q), numthreads=threads),
            lambda d: np.asarray(imagecodecs.jpegxl_decode(d, numthreads=threads)),
        )
    except ImportError as exc:
        codecs["jxl"] = Codec("jxl", f"unavailable: {exc}", "distance", [], _unavailable(exc), _unavailable(exc))
    try:  # Pillow's AVIF decoder takes its thread count from this module variable
        from PIL import AvifImagePlugin

        AvifImagePlugin.DEFAULT_MAX_THREADS = threads
    except ImportError:
        pass
    return codecs


def _unavailable(exc: Exception) -> Callable[..., Any]:
    def fail(*_: Any) -> Any:
        raise RuntimeError(str(exc))

    return fail


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    import PIL

    out["pillow"] = PIL.__version__
    for label, feature in (
        ("libjpeg-turbo", "libjpeg_turbo"),
        ("libwebp", "webp"),
        ("openjpeg", "jpg_2000"),
        ("libavif", "avif"),
    ):
        try:
            out[label] = features.version(feature)
        except Exception:  # a missing feature only leaves the version out
            out[label] = None
    try:
        import imagecodecs

        out["imagecodecs"] = imagecodecs.__version__
        out["libjxl"] = imagecodecs.jpegxl_version().removeprefix("libjxl ")
    except Exception:
        out["imagecodecs"] = None
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    return out


# --- measurement -----------------------------------------------------------------------------------


def load_images(folder: Path, max_images: int | None) -> list[tuple[str, np.ndarray]]:
    """Every image file in ``folder`` (sorted by name) as 8-bit RGB."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if max_images is not None:
        paths = paths[:max_images]
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append((p.name, np.ascontiguousarray(np.asarray(im.convert("RGB")))))
    return images


def measure(name: str, original: np.ndarray, data: bytes, decoded: np.ndarray, enc_s: float, dec_s: float) -> dict:
    if decoded.shape != original.shape or decoded.dtype != np.uint8:
        raise ValueError(f"decoded {decoded.shape} {decoded.dtype}, expected {original.shape} uint8")
    h, w = original.shape[:2]
    return {
        "image": name,
        "bytes": len(data),
        "bpp": len(data) * 8 / (h * w),
        "psnr": psnr(original, decoded, 255),
        "ms_ssim": ms_ssim(original, decoded, 255),
        "enc_s": enc_s,
        "dec_s": dec_s,
    }


def summarize(rows: list[dict]) -> dict:
    """Means of bpp/PSNR/MS-SSIM and median times over images."""
    return {
        "mean_bpp": statistics.fmean(r["bpp"] for r in rows),
        "mean_psnr": statistics.fmean(r["psnr"] for r in rows),
        "mean_ms_ssim": statistics.fmean(r["ms_ssim"] for r in rows),
        "median_enc_s": statistics.median(r["enc_s"] for r in rows),
        "median_dec_s": statistics.median(r["dec_s"] for r in rows),
    }


def run_classical(codec: Codec, images: list[tuple[str, np.ndarray]]) -> dict:
    points = []
    for q in codec.qualities:
        rows = []
        for name, img in images:
            t0 = time.perf_counter()
            data = codec.encode(img, q)
            t1 = time.perf_counter()
            dec = codec.decode(data)
            t2 = time.perf_counter()
            rows.append(measure(name, img, data, dec, t1 - t0, t2 - t1))
        point = {"quality": q, **summarize(rows), "per_image": rows}
        points.append(point)
        log(
            f"  {codec.name} {codec.param}={q}: {point['mean_bpp']:.3f} bpp, {point['mean_psnr']:.2f} dB, "
            f"MS-SSIM {point['mean_ms_ssim']:.4f}"
        )
    all_rows = [r for p in points for r in p["per_image"]]
    result = {
        "settings": codec.settings,
        "param": codec.param,
        "points": points,
        "median_enc_s": statistics.median(r["enc_s"] for r in all_rows),
        "median_dec_s": statistics.median(r["dec_s"] for r in all_rows),
    }
    result["psnr_at"] = {f"{t:.2f}": interp(points, t, "mean_psnr") for t in TARGETS}
    result["ms_ssim_at"] = {f"{t:.2f}": interp(points, t, "mean_ms_ssim") for t in TARGETS}
    return result


def run_vqcodec(images: list[tuple[str, np.ndarray]], model: str | None) -> dict:
    from vqcodec import compress, decompress

    warm = images[0][1][:64, :64]  # loads the model and any lazy state outside the timed calls
    decompress(compress(np.ascontiguousarray(warm), model=model), model=model)
    rows = []
    for name, img in images:
        t0 = time.perf_counter()
        data = compress(img, model=model)
        t1 = time.perf_counter()
        dec = np.asarray(decompress(data, model=model))
        t2 = time.perf_counter()
        rows.append(measure(name, img, data, dec, t1 - t0, t2 - t1))
        log(f"  vqcodec {name}: {rows[-1]['bpp']:.3f} bpp, {rows[-1]['psnr']:.2f} dB, {t1 - t0:.2f}+{t2 - t1:.2f} s")
    return {"settings": f"model={model or 'default'}", **summarize(rows), "per_image": rows}


def interp(points: list[dict], bpp: float, key: str) -> float | None:
    """``key`` of the per-quality means, linear in bpp; None outside the swept bpp range."""
    pts = sorted((p["mean_bpp"], p[key]) for p in points if math.isfinite(p[key]))
    if not pts or bpp < pts[0][0] or bpp > pts[-1][0]:
        return None
    return float(np.interp(bpp, [x for x, _ in pts], [y for _, y in pts]))


# --- output ---------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt(v: float | None, digits: int) -> str:
    return DASH if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def ms(v: float | None) -> str:
    return DASH if v is None else (f"{v * 1000:.1f}" if v < 10 else f"{v * 1000:.0f}")


def markdown(results: dict) -> str:
    meta = results["meta"]
    classical = {k: v for k, v in results["codecs"].items() if "points" in v}
    vq = results.get("vqcodec")
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in meta["sizes"].items())
    lines = [
        f"# Rate-distortion on `{meta['data']}`: {meta['n_images']} images, {sizes}",
        "",
        f"Threads: {meta['threads']} (torch.set_num_threads({meta['threads']}); codec thread options set to "
        f"{meta['threads']} where the library has one). Libraries: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        "",
        "bpp counts whole files; PSNR = mean of per-image RGB PSNR (dB); MS-SSIM = mean of per-image RGB MS-SSIM; "
        "values at a target are interpolated linearly in bpp between swept quality points "
        f"({DASH} = outside the swept range).",
        "",
        "## PSNR (dB) at target bitrates",
        "",
        "| codec | " + " | ".join(f"@{t:.2f}" for t in TARGETS) + " bpp | swept bpp range |",
        "|---|" + "---|" * (len(TARGETS) + 1),
    ]
    for name, r in classical.items():
        bpps = [p["mean_bpp"] for p in r["points"]]
        cells = [fmt(r["psnr_at"][f"{t:.2f}"], 2) for t in TARGETS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {min(bpps):.3f}–{max(bpps):.3f} |")
    if vq and "mean_bpp" in vq:
        lines.append(f"| vqcodec (fixed rate) | {vq['mean_psnr']:.2f} dB at {vq['mean_bpp']:.3f} bpp |" + " |" * 7)
    lines += [
        "",
        f"## MS-SSIM @{MS_SSIM_TARGET} bpp and speed (median ms per image, {meta['threads']} thread(s))",
        "",
        "| codec | settings | MS-SSIM @0.25 | encode ms | decode ms |",
        "|---|---|---|---|---|",
    ]
    for name, r in classical.items():
        lines.append(
            f"| {name} | {r['settings']} | {fmt(r['ms_ssim_at'][f'{MS_SSIM_TARGET:.2f}'], 4)} | "
            f"{ms(r['median_enc_s'])} | {ms(r['median_dec_s'])} |"
        )
    if vq and "mean_bpp" in vq:
        lines.append(
            f"| vqcodec | {vq['settings']} | {vq['mean_ms_ssim']:.4f} (at {vq['mean_bpp']:.3f} bpp) | "
            f"{ms(vq['median_enc_s'])} | {ms(vq['median_dec_s'])} |"
        )
    lines.append("")
    lines.append("Classical times are medians over all images and all quality points.")
    for name, r in results["codecs"].items():
        if "error" in r:
            lines.append(f"\n**{name} failed**: {r['error']}")
    lines += ["", "## Side by side at vqcodec's bitrate", ""]
    if vq and "mean_bpp" in vq:
        b = vq["mean_bpp"]
        lines += [
            f"vqcodec mean bpp = {b:.4f}; classical values interpolated at that bpp.",
            "",
            "| codec | bpp | PSNR (dB) | Δ PSNR vs vqcodec | MS-SSIM | Δ MS-SSIM vs vqcodec |",
            "|---|---|---|---|---|---|",
            f"| vqcodec | {b:.3f} | {vq['mean_psnr']:.2f} | 0 | {vq['mean_ms_ssim']:.4f} | 0 |",
        ]
        for name, r in classical.items():
            p = interp(r["points"], b, "mean_psnr")
            s = interp(r["points"], b, "mean_ms_ssim")
            dp = None if p is None else p - vq["mean_psnr"]
            dm = None if s is None else s - vq["mean_ms_ssim"]
            sign = "+" if dp is not None and dp >= 0 else ""
            signm = "+" if dm is not None and dm >= 0 else ""
            lines.append(f"| {name} | {b:.3f} | {fmt(p, 2)} | {sign}{fmt(dp, 2)} | {fmt(s, 4)} | {signm}{fmt(dm, 4)} |")
    elif vq and "error" in vq:
        lines.append(f"vqcodec was not measured: {vq['error']}")
    else:
        lines.append("vqcodec was not requested (add it to --codecs).")
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats (PSNR of a lossless result) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder of images (e.g. ../shared/datasets/kodak)")
    ap.add_argument(
        "--codecs",
        default="jpeg,webp,jp2,avif,jxl,vqcodec",
        help="comma-separated subset of jpeg,webp,jp2,avif,jxl,vqcodec (default: all)",
    )
    ap.add_argument("--model", default=None, help="vqcodec model file (default: the embedded default model)")
    ap.add_argument("--out", type=Path, default=Path("results.json"), help="raw per-quality/per-image numbers")
    ap.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted by name)")
    ap.add_argument("--threads", type=int, default=1, help="torch and codec threads (default 1)")
    ap.add_argument(
        "--quality",
        action="append",
        default=[],
        metavar="CODEC=Q1,Q2,...",
        help="override a codec's sweep, e.g. --quality jpeg=10,50,90 --quality jxl=5,1.5 (repeatable)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        log("torch is not installed; thread count only applies to the classical codecs")
    wanted = [c.strip() for c in args.codecs.split(",") if c.strip()]
    codecs = make_codecs(args.threads)
    unknown = [c for c in wanted if c not in codecs and c != "vqcodec"]
    if unknown:
        log(f"unknown codec(s): {', '.join(unknown)}; choose from {', '.join([*codecs, 'vqcodec'])}")
        return 2
    for spec in args.quality:
        name, _, values = spec.partition("=")
        if name not in codecs or not values:
            log(f"bad --quality {spec!r}: expected CODEC=Q1,Q2 with CODEC one of {', '.join(codecs)}")
            return 2
        codecs[name].qualities = [int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in values.split(",")]

    images = load_images(args.data, args.max_images)
    if not images:
        log(f"no images found in {args.data}")
        return 2
    sizes: dict[tuple[int, int], int] = {}
    for _, img in images:
        key = (img.shape[1], img.shape[0])
        sizes[key] = sizes.get(key, 0) + 1
    log(f"{len(images)} images from {args.data}, threads={args.threads}")
    results: dict[str, Any] = {
        "meta": {
            "data": str(args.data),
            "n_images": len(images),
            "images": [n for n, _ in images],
            "sizes": sizes,
            "threads": args.threads,
            "targets_bpp": list(TARGETS),
            "versions": library_versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.platform(),
        },
        "codecs": {},
    }
    for name in wanted:
        if name == "vqcodec":
            continue
        log(f"{name}: {codecs[name].settings}")
        try:
            results["codecs"][name] = run_classical(codecs[name], images)
        except Exception as exc:  # report and go on with the other codecs
            log(traceback.format_exc())
            results["codecs"][name] = {"settings": codecs[name].settings, "error": f"{type(exc).__name__}: {exc}"}
    if "vqcodec" in wanted:
        log(f"vqcodec: model={args.model or 'default'}")
        try:
            results["vqcodec"] = run_vqcodec(images, args.model)
        except Exception as exc:  # an unusable vqcodec must not lose the classical results
            log(traceback.format_exc())
            results["vqcodec"] = {
                "settings": f"model={args.model or 'default'}",
                "error": f"{type(exc).__name__}: {exc}",
            }

    report = markdown(results)
    print(report)
    out = _clean({**results, "meta": {**results["meta"], "sizes": {f"{w}x{h}": n for (w, h), n in sizes.items()}}})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    log(f"raw numbers written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
