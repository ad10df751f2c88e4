"""One benchmark run, from a folder of images to a folder of results.

Everything that can fail on bad input (an unknown codec, a malformed reference file, an output that
exists, a missing optional dependency) fails before the first image is measured, so a long run
never dies at the end. The result folder holds, per codec, ``NAME.json`` (CompressAI's result
schema) and ``NAME-images.csv`` (every image at every setting), then ``vqcodec-coding.json``
(bits per code of each level), ``rd.png`` and ``summary.md``.

The perceptual metric (ColorVideoVDP, ``vqcodec.bench.perceptual``) is optional even within the
``[bench]`` extra: by default it runs when it imports, and when it does not the benchmark says so
in one line and in the summary, and measures everything else, since PSNR and MS-SSIM alone are
still the figures the field compares.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vqcodec.bench import bd, perceptual, plot
from vqcodec.bench.classical import CODEC_NAMES, classical_codecs, library_versions, parse_qualities
from vqcodec.bench.report import (
    VQCODEC,
    coding_json,
    curves_from_rows,
    load_reference,
    markdown_summary,
    rows_csv,
    to_compressai,
)
from vqcodec.bench.runner import OperatingPoint, classical_points, run, vqcodec_point
from vqcodec.errors import VQCodecError

ALL_CODECS: tuple[str, ...] = (VQCODEC, *CODEC_NAMES)
PLOT_FILE = "rd.png"
SUMMARY_FILE = "summary.md"
CODING_FILE = "vqcodec-coding.json"


@dataclass
class BenchmarkResult:
    """What a run wrote, and its summary text."""

    files: list[Path]
    summary: str


def parse_codecs(text: str) -> list[str]:
    """``"vqcodec,jpeg"`` -> ["vqcodec", "jpeg"], checked, in the given order without repeats."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ALL_CODECS]
    if unknown or not names:
        raise VQCodecError(f"--codecs takes a comma-separated list of {','.join(ALL_CODECS)}, not '{text}'")
    return names


def _model_specs(models: Sequence[str], model_dirs: Sequence[os.PathLike]) -> list[tuple[str, str, float]]:
    """(label, model spec, scale) of the vqcodec points to run: the models given (each at scale 1),
    or the rungs of the shipped quality ladder (models kept only to decode old files are off it)."""
    if models:
        return [(Path(m).stem if Path(m).suffix else m, m, 1.0) for m in dict.fromkeys(models)]
    from vqcodec.zoo.registry import ladder

    return [(r.name, r.model, r.scale) for r in ladder()]


def _perceptual_metric(wanted: bool | None, log: Callable[[str], None]) -> tuple[perceptual.ColorVideoVDP | None, str]:
    """The perceptual metric to run (or None) and the summary's line about it; see ``benchmark``."""
    if wanted is False:
        return None, f"{perceptual.LABEL} not measured (--no-cvvdp)."
    why = perceptual.unavailable()
    if why is not None:
        if wanted:
            raise VQCodecError(f"--cvvdp: {why}")
        log(f"{perceptual.KEY}: skipped ({why})")
        return None, f"{perceptual.LABEL} not measured: skipped ({why})."
    metric = perceptual.ColorVideoVDP()
    return metric, (f"{perceptual.LABEL} = {metric.description}, each image at its own size; mean of per-image "
                    "values.")


def benchmark(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    codecs: Sequence[str] = ALL_CODECS,
    qualities: Sequence[str] = (),
    references: Sequence[str | os.PathLike] = (),
    models: Sequence[str] = (),
    model_dirs: Sequence[os.PathLike] = (),
    max_images: int | None = None,
    threads: int = 1,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    cvvdp: bool | None = None,
) -> BenchmarkResult:
    """Measure every codec of ``codecs`` on the images under ``folder`` and write the results to ``out``.

    ``cvvdp``: True requires the perceptual metric (an error before anything runs when it cannot),
    False leaves it out, None runs it when it imports and otherwise logs that it was skipped."""
    from vqcodec.atomic import atomic_write_bytes
    from vqcodec.imageio import list_images

    codecs = parse_codecs(",".join(codecs))
    sweeps = parse_qualities(qualities)
    for name in sweeps:
        if name not in codecs:
            raise VQCodecError(f"--quality {name}=... was given, but {name} is not in --codecs")
    plot.require()
    bd.require()
    metric, metric_note = _perceptual_metric(cvvdp, log)
    reference_curves = [load_reference(p) for p in references]
    images = list_images(folder)[:max_images]
    out = Path(out)

    available, missing = classical_codecs(threads)
    for name in codecs:
        if name in missing:
            log(f"{name}: skipped ({missing[name]})")
    classical = {n: available[n] for n in codecs if n in available}
    for name, values in sweeps.items():
        if name in classical:
            classical[name] = classical[name].with_qualities(values)
    run_names = [n for n in codecs if n == VQCODEC or n in classical]
    planned = [out / f"{n}.json" for n in run_names] + [out / f"{n}-images.csv" for n in run_names]
    planned += [out / PLOT_FILE, out / SUMMARY_FILE] + ([out / CODING_FILE] if VQCODEC in run_names else [])
    if out.exists() and not out.is_dir():
        raise VQCodecError(f"--out {out} is a file, not a folder")
    existing = [p.name for p in planned if p.exists()]
    if existing and not force:
        raise VQCodecError(f"{out} already holds {', '.join(existing)}; use --force to overwrite")

    import torch

    torch.set_num_threads(threads)
    points: list[OperatingPoint] = []
    descriptions: dict[str, str] = {}
    for name in run_names:
        if name == VQCODEC:
            from vqcodec.zoo.codec_model import load_codec_model

            specs = _model_specs(models, model_dirs)
            if not specs:
                raise VQCodecError("no vqcodec model to run: none is shipped; give one with --model")
            loaded = {spec: load_codec_model(spec, "cpu", tuple(model_dirs)) for _, spec, _ in specs}
            points += [vqcodec_point(loaded[spec], f"model={label}", scale=scale) for label, spec, scale in specs]
            models_text = ", ".join(f"{label} ({loaded[spec].fingerprint.hex()[:12]})" for label, spec, _ in specs)
            descriptions[name] = ("vqcodec (VQ-VAE-2, integer PixelCNN priors, range coding), one point per model: "
                                  f"{models_text}; {threads} thread(s)")
        else:
            codec = classical[name]
            points += classical_points(codec)
            descriptions[name] = f"{codec.description}; {codec.param} " + \
                ", ".join(f"{q:g}" for q in codec.qualities)
    log(f"{len(images)} images from {folder}; {len(points)} operating points ({', '.join(run_names)}); "
        f"{threads} thread(s)")
    result = run(images, points, progress=progress, perceptual=metric)

    curves = curves_from_rows(result.rows, descriptions)
    all_curves = curves + reference_curves
    sizes: dict[str, int] = {}
    for r in result.rows:
        if r.codec == result.rows[0].codec and r.setting == result.rows[0].setting:
            sizes[f"{r.width}x{r.height}"] = sizes.get(f"{r.width}x{r.height}", 0) + 1
    versions = library_versions()
    header = [
        f"# Benchmark: {Path(folder).name}, {len(images)} images ({', '.join(f'{k}: {v}' for k, v in sizes.items())})",
        "",
        f"Run {datetime.date.today().isoformat()} on {platform.machine()} with {os.cpu_count()} CPU(s), "
        f"{threads} thread(s). Libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "bpp counts whole files; PSNR (RGB, dB) and MS-SSIM (RGB) are means of per-image values.",
        metric_note,
    ]
    summary = markdown_summary(all_curves, result.coding, header)

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data, force=force)
        written.append(out / name)

    for c in curves:
        rows = [r for r in result.rows if r.codec == c.name]
        write(f"{c.name}.json", (json.dumps(to_compressai(c), indent=2) + "\n").encode())
        write(f"{c.name}-images.csv", rows_csv(rows).encode())
    if result.coding:
        write(CODING_FILE, (json.dumps(coding_json(result.coding), indent=2) + "\n").encode())
    write(PLOT_FILE, plot.plot_png(all_curves, f"{Path(folder).name}: {len(images)} images"))
    write(SUMMARY_FILE, summary.encode())
    return BenchmarkResult(written, summary)
