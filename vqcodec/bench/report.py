"""Benchmark results as files people in the field read: CompressAI result JSON, raw rows, Markdown.

A curve is one codec's operating points, each the mean over images of bpp, PSNR and MS-SSIM (so
PSNR is the mean of per-image PSNR, as CompressAI reports it), and of the perceptual metric
ColorVideoVDP where it ran, plus the mean encode and decode time per image. Result files follow
CompressAI's schema (``{"name", "description", "results": {"bpp", "psnr-rgb", "ms-ssim-rgb",
"encoding_time", "decoding_time"}}``), so our curves and its published ones
(``results/image/kodak/*.json``) overlay in either tool; the schema allows extra metrics, so
ColorVideoVDP goes in ``results.cvvdp`` (JOD) when measured. Older CompressAI files that say
``psnr`` / ``ms-ssim`` are read too. Values at a fixed rate are interpolated linearly in bpp between
measured points, never extrapolated.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqcodec.bench import bd
from vqcodec.bench.coding_stats import CodingStats
from vqcodec.bench.perceptual import KEY as CVVDP_KEY
from vqcodec.bench.perceptual import LABEL as CVVDP
from vqcodec.bench.perceptual import UNIT as JOD
from vqcodec.bench.runner import Row
from vqcodec.errors import VQCodecError

RESULT_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")
FIXED_RATES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
DASH = "–"
VQCODEC = "vqcodec"
LABELS = {"vqcodec": "vqcodec", "jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jp2": "JPEG 2000", "jxl": "JPEG XL"}
SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"


@dataclass
class Curve:
    """One codec's operating points, sorted by bpp."""

    name: str
    description: str
    bpp: list[float]
    psnr: list[float]
    ms_ssim: list[float]  # NaN where unknown (a reference without MS-SSIM)
    encoding_time: list[float] = field(default_factory=list)  # mean seconds per image, per point
    decoding_time: list[float] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    median_encode_s: float | None = None  # over every image and point
    median_decode_s: float | None = None
    reference: bool = False  # read from a result file, not measured in this run
    cvvdp: list[float] = field(default_factory=list)  # ColorVideoVDP (JOD) per point; empty where not measured

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name) + (" (reference)" if self.reference else "")

    def at(self, rate: float, metric: str = "psnr") -> float | None:
        """``metric`` at ``rate`` bpp, linear between points; None outside the measured range."""
        pts = [(b, v) for b, v in zip(self.bpp, getattr(self, metric)) if math.isfinite(b) and math.isfinite(v)]
        if not pts:
            return None
        xs, ys = zip(*sorted(pts))
        if rate < xs[0] - 1e-12 or rate > xs[-1] + 1e-12:
            return None
        return float(np.interp(rate, xs, ys))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the decibel scale the field plots: -10 log10(1 - MS-SSIM)."""
    return float("inf") if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def curves_from_rows(rows: Sequence[Row], descriptions: dict[str, str]) -> list[Curve]:
    """One curve per codec (in order of first appearance), one point per setting."""
    by_codec: dict[str, dict[str, list[Row]]] = {}
    for r in rows:
        by_codec.setdefault(r.codec, {}).setdefault(r.setting, []).append(r)
    curves = []
    for codec, settings in by_codec.items():
        points = sorted(((_mean([r.bpp for r in rs]), s, rs) for s, rs in settings.items()), key=lambda p: p[0])
        all_rows = [r for _, _, rs in points for r in rs]
        curves.append(Curve(
            name=codec, description=descriptions.get(codec, codec),
            bpp=[b for b, _, _ in points],
            psnr=[_mean([r.psnr for r in rs]) for _, _, rs in points],
            ms_ssim=[_mean([r.ms_ssim for r in rs]) for _, _, rs in points],
            encoding_time=[_mean([r.encode_s for r in rs]) for _, _, rs in points],
            decoding_time=[_mean([r.decode_s for r in rs]) for _, _, rs in points],
            settings=[s for _, s, _ in points],
            median_encode_s=statistics.median(r.encode_s for r in all_rows),
            median_decode_s=statistics.median(r.decode_s for r in all_rows),
            cvvdp=([_mean([r.cvvdp for r in rs]) for _, _, rs in points]
                   if all(r.cvvdp is not None for r in all_rows) else []),
        ))
    return curves


# -- CompressAI result files ------------------------------------------------------------------------------


def _json_safe(value):
    """Non-finite floats (the PSNR of a lossless result) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_compressai(curve: Curve) -> dict:
    """The curve in CompressAI's result schema (plus our ``settings``, which its tools ignore), with
    ColorVideoVDP as the extra metric ``cvvdp`` where it was measured."""
    results = {
        "bpp": curve.bpp, "psnr-rgb": curve.psnr, "ms-ssim-rgb": curve.ms_ssim,
        "encoding_time": curve.encoding_time, "decoding_time": curve.decoding_time,
    }
    if curve.cvvdp:
        results[CVVDP_KEY] = curve.cvvdp
    return _json_safe({"name": curve.name, "description": curve.description, "results": results,
                       "settings": curve.settings})


def _numbers(results: dict, key: str, n: int | None, where: str) -> list[float] | None:
    if key not in results:
        return None
    values = results[key]
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in values)):
        raise VQCodecError(f"{where}: results.{key} must be a non-empty list of numbers")
    if n is not None and len(values) != n:
        raise VQCodecError(f"{where}: results.{key} has {len(values)} values but results.bpp has {n}")
    return [float("nan") if v is None else float(v) for v in values]


def validate_result(obj: object, where: str, complete: bool = False) -> Curve:
    """A Curve from a CompressAI result object; a VQCodecError says what is wrong with it.
    ``complete`` also requires MS-SSIM and both times (what this benchmark writes)."""
    if not isinstance(obj, dict):
        raise VQCodecError(f"{where}: not a CompressAI result file (expected a JSON object)")
    results = obj.get("results")
    if not isinstance(results, dict):
        raise VQCodecError(f"{where}: not a CompressAI result file (no 'results' object)")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise VQCodecError(f"{where}: 'name' must be a non-empty string")
    bpp = _numbers(results, "bpp", None, where)
    if bpp is None:
        raise VQCodecError(f"{where}: results.bpp is missing")
    n = len(bpp)
    psnr = _numbers(results, "psnr-rgb", n, where) or _numbers(results, "psnr", n, where)
    if psnr is None:
        raise VQCodecError(f"{where}: results.psnr-rgb (or psnr) is missing")
    ms = _numbers(results, "ms-ssim-rgb", n, where) or _numbers(results, "ms-ssim", n, where)
    if ms is not None and any(math.isfinite(v) and not 0.0 <= v <= 1.0 for v in ms):
        raise VQCodecError(f"{where}: results.ms-ssim-rgb must be between 0 and 1 (not in dB)")
    enc = _numbers(results, "encoding_time", n, where)
    dec = _numbers(results, "decoding_time", n, where)
    cv = _numbers(results, CVVDP_KEY, n, where)
    if complete:
        missing = [k for k, v in zip(RESULT_KEYS[2:], (ms, enc, dec)) if v is None]
        if missing:
            raise VQCodecError(f"{where}: results.{', results.'.join(missing)} missing")
    if any(not (math.isfinite(b) and b > 0) for b in bpp):
        raise VQCodecError(f"{where}: every results.bpp value must be a positive number")
    description = obj.get("description", "")
    order = sorted(range(n), key=lambda i: bpp[i])
    pick = lambda values: [values[i] for i in order] if values else []  # noqa: E731
    return Curve(name, description if isinstance(description, str) else str(description), pick(bpp), pick(psnr),
                 pick(ms) if ms else [float("nan")] * n, pick(enc), pick(dec), cvvdp=pick(cv))


def load_reference(path: str | Path) -> Curve:
    """A published curve from a CompressAI result file, checked, marked as a reference."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise VQCodecError(f"cannot read reference {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VQCodecError(f"reference {path} is not valid JSON: {err}") from None
    curve = validate_result(obj, f"reference {path}")
    curve.reference = True
    return curve


# -- raw rows ---------------------------------------------------------------------------------------------


def rows_csv(rows: Sequence[Row]) -> str:
    """Every per-image measurement, one line each (the ``cvvdp`` column only where it was measured)."""
    buf = io.StringIO()
    fields = [f for f in Row.__dataclass_fields__ if f != "cvvdp" or any(r.cvvdp is not None for r in rows)]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.as_dict().items() if k in fields})
    return buf.getvalue()


def coding_json(coding: dict[str, CodingStats]) -> dict:
    """The per-level bits of every vqcodec point, per image and in total."""
    out = {}
    for setting, s in coding.items():
        out[setting] = _json_safe({
            "images": s.images, "pixels": s.pixels, "payload_bits": s.payload_bits,
            "payload_bpp": s.payload_bits / s.pixels if s.pixels else None, "levels": s.table(),
        })
    return out


# -- Markdown ---------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return DASH
    return f"{seconds * 1000:.1f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


class _Notes:
    """Numbered footnotes, one per distinct reason."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        i = self.texts.index(text)
        return SUPERSCRIPTS[i] if i < len(SUPERSCRIPTS) else f"[{i + 1}]"

    def lines(self) -> list[str]:
        return [f"{SUPERSCRIPTS[i] if i < len(SUPERSCRIPTS) else f'[{i + 1}]'} {t}" for i, t in enumerate(self.texts)]


def _bd_cells(vq: Curve | None, other: Curve, notes: _Notes, metric: str = "psnr",
              unit: str = " dB") -> tuple[str, str]:
    """BD-rate and BD-``metric`` (in ``unit``) of vqcodec (test) against ``other`` (anchor), or dashes
    with a footnote."""
    if vq is None:
        return DASH, DASH
    if other is vq:
        return "(this)", "(this)"
    if not getattr(other, metric) or not getattr(vq, metric):
        return DASH, DASH
    cells = []
    for fn, digits, suffix in ((bd.bd_rate, 1, " %"), (bd.bd_psnr, 2, unit)):
        try:
            value = fn(other.bpp, getattr(other, metric), vq.bpp, getattr(vq, metric))
            cells.append(_num(value, digits, sign=True) + suffix)
        except bd.BDUnavailable as why:
            text = str(why).replace("the test curve", "vqcodec's curve").replace("the anchor curve", other.label)
            if "vqcodec's curve has" in text:
                text += " (one point per codec model: run more models with --model to get a curve)"
            cells.append(DASH + notes.mark(text))
    return cells[0], cells[1]


def markdown_summary(curves: Sequence[Curve], coding: dict[str, CodingStats] | None = None,
                     header: Sequence[str] = ()) -> str:
    """The summary: one row per codec (BD-rate, BD-PSNR, PSNR at fixed rates, median times), vqcodec
    against every curve at vqcodec's own bitrate, and where vqcodec's bits go."""
    notes = _Notes()
    vq = next((c for c in curves if c.name == VQCODEC and not c.reference), None)
    lines = [*header, ""] if header else []
    lines += [
        "## Rate-distortion summary",
        "",
        f"BD-rate / BD-PSNR: vqcodec against each codec ({bd.METHOD.upper()} Bjøntegaard, over the range the two "
        "curves share; negative BD-rate = vqcodec needs fewer bits). PSNR in dB at fixed bpp, linear between "
        f"measured points ({DASH} outside a curve). Times: median ms per image over every image and point.",
        "",
        "| codec | points | bpp range | BD-rate | BD-PSNR | " + " | ".join(f"PSNR @{r:g}" for r in FIXED_RATES)
        + " | encode ms | decode ms |",
        "|---|---|---|---|---|" + "---|" * len(FIXED_RATES) + "---|---|",
    ]
    for c in curves:
        rate, gain = _bd_cells(vq, c, notes)
        fixed = [_num(c.at(r), 2) for r in FIXED_RATES]
        if c.reference:
            enc = dec = DASH + notes.mark("reference curves are read from their result files, not timed here")
        else:
            enc, dec = _ms(c.median_encode_s), _ms(c.median_decode_s)
        span = f"{min(c.bpp):.3f}–{max(c.bpp):.3f}" if len(c.bpp) > 1 else f"{c.bpp[0]:.3f}"
        lines.append(f"| {c.label} | {len(c.bpp)} | {span} | {rate} | {gain} | " + " | ".join(fixed)
                     + f" | {enc} | {dec} |")
    if vq is not None and len(vq.bpp) == 1:
        lines += ["", f"vqcodec has one operating point per model, so its PSNR at a fixed rate is {DASH} unless "
                      "that point lies on the rate; the table below compares at its own bitrate instead."]
    if any(c.cvvdp for c in curves):
        lines += _perceptual_table(curves, vq, notes)
    if vq is not None:
        lines += _points_table(vq, [c for c in curves if c is not vq and not c.reference])
        lines += _side_by_side(vq, [c for c in curves if c is not vq])
    if coding:
        lines += _coding_table(coding, vq)
    if notes.texts:
        lines += ["", *notes.lines()]
    return "\n".join(lines) + "\n"


def _perceptual_table(curves: Sequence[Curve], vq: Curve | None, notes: _Notes) -> list[str]:
    """The rate-distortion table again with ColorVideoVDP (JOD) as the quality: where PSNR and a
    perceptual metric disagree about a codec is what this section is for."""
    lines = [
        "", f"## Perceptual quality: {CVVDP} (ColorVideoVDP)", "",
        f"{CVVDP} in {JOD} (just-objectionable differences): 10 = no visible difference from the original; one "
        f"{JOD} less = 75 % of observers prefer the original. BD-rate ({CVVDP}) / BD-{JOD}: vqcodec against each "
        f"codec, the same Bjøntegaard method with {CVVDP} as the quality (negative BD-rate = vqcodec needs fewer "
        f"bits for the same {CVVDP}). {CVVDP} at fixed bpp, linear between measured points ({DASH} outside a curve).",
        "",
        f"| codec | points | BD-rate ({CVVDP}) | BD-{JOD} | "
        + " | ".join(f"{CVVDP} @{r:g}" for r in FIXED_RATES) + " |",
        "|---|---|---|---|" + "---|" * len(FIXED_RATES),
    ]
    for c in curves:
        if not c.cvvdp:
            cells = [DASH + notes.mark(f"no {CVVDP} values in its result file" if c.reference else
                                       f"{CVVDP} was not measured")] * (2 + len(FIXED_RATES))
        else:
            cells = [*_bd_cells(vq, c, notes, "cvvdp", f" {JOD}"), *(_num(c.at(r, "cvvdp"), 2) for r in FIXED_RATES)]
        lines.append(f"| {c.label} | {len(c.bpp)} | " + " | ".join(cells) + " |")
    return lines


def _points_table(vq: Curve, others: Sequence[Curve]) -> list[str]:
    """One row per vqcodec point: its figures, its PSNR and MS-SSIM (dB) margins over every other
    measured curve at its bpp (and its CVVDP margins where measured), and its mean times (the
    quality ladder's targets in one table)."""
    perceptual = bool(vq.cvvdp)
    heads = [f"PSNR − {c.label}" for c in others] + [f"MS-SSIM dB − {c.label}" for c in others]
    if perceptual:
        heads += [f"{CVVDP} − {c.label}" for c in others]
    lines = [
        "", "## vqcodec's points against the others", "",
        "Margins at each vqcodec point's bpp (vqcodec minus the other curve, interpolated linearly; positive: "
        f"vqcodec is better; {DASH}: outside that curve). Times: mean s per image at that point.",
        "",
        "| point | bpp | PSNR | MS-SSIM | " + (f"{CVVDP} | " if perceptual else "") + " | ".join(heads)
        + " | encode s | decode s |",
        "|---|---|---|---|" + ("---|" if perceptual else "") + "---|" * len(heads) + "---|---|",
    ]
    for i, rate in enumerate(vq.bpp):
        margins = []
        for c in others:
            p = c.at(rate, "psnr")
            margins.append(_num(None if p is None else vq.psnr[i] - p, 2, True))
        for c in others:
            m = c.at(rate, "ms_ssim")
            ok = m is not None and math.isfinite(m) and math.isfinite(vq.ms_ssim[i])
            margins.append(_num(ms_ssim_db(vq.ms_ssim[i]) - ms_ssim_db(m) if ok else None, 2, True))
        for c in others if perceptual else ():
            j = c.at(rate, "cvvdp")
            margins.append(_num(None if j is None else vq.cvvdp[i] - j, 2, True))
        setting = vq.settings[i] if i < len(vq.settings) else f"point {i + 1}"
        enc = vq.encoding_time[i] if i < len(vq.encoding_time) else None
        dec = vq.decoding_time[i] if i < len(vq.decoding_time) else None
        lines.append(f"| {setting} | {rate:.3f} | {_num(vq.psnr[i], 2)} | {_num(vq.ms_ssim[i], 4)} | "
                     + (f"{_num(vq.cvvdp[i], 2)} | " if perceptual else "")
                     + " | ".join(margins) + f" | {_num(enc, 2)} | {_num(dec, 2)} |")
    return lines


def _side_by_side(vq: Curve, others: Sequence[Curve]) -> list[str]:
    """Every other curve interpolated at each vqcodec point's bpp (CVVDP too where vqcodec has it)."""
    perceptual = bool(vq.cvvdp)
    lines = []
    for i, rate in enumerate(vq.bpp):
        setting = vq.settings[i] if i < len(vq.settings) else f"point {i + 1}"
        ms_vq = vq.ms_ssim[i]
        lines += [
            "", f"## At vqcodec's bitrate ({setting}: {rate:.3f} bpp)", "",
            "Other curves interpolated linearly at this bpp; Δ = codec minus vqcodec (positive: that codec is "
            f"better). MS-SSIM also in dB, -10·log10(1 − MS-SSIM). {DASH}: outside that codec's measured range.",
            "",
            "| codec | PSNR (dB) | Δ PSNR | MS-SSIM | MS-SSIM (dB) | Δ MS-SSIM (dB) |"
            + (f" {CVVDP} ({JOD}) | Δ {CVVDP} |" if perceptual else ""),
            "|---|---|---|---|---|---|" + ("---|---|" if perceptual else ""),
            f"| **vqcodec** | **{_num(vq.psnr[i], 2)}** | 0 | **{_num(ms_vq, 4)}** | **{_num(ms_ssim_db(ms_vq), 2)}** "
            "| 0 |" + (f" **{_num(vq.cvvdp[i], 2)}** | 0 |" if perceptual else ""),
        ]
        for c in others:
            p, s = c.at(rate, "psnr"), c.at(rate, "ms_ssim")
            dp = None if p is None else p - vq.psnr[i]
            sdb = None if s is None else ms_ssim_db(s)
            ds = None if sdb is None else sdb - ms_ssim_db(ms_vq)
            line = (f"| {c.label} | {_num(p, 2)} | {_num(dp, 2, True)} | {_num(s, 4)} | {_num(sdb, 2)} "
                    f"| {_num(ds, 2, True)} |")
            if perceptual:
                j = c.at(rate, "cvvdp")
                line += f" {_num(j, 2)} | {_num(None if j is None else j - vq.cvvdp[i], 2, True)} |"
            lines.append(line)
    return lines


def _coding_table(coding: dict[str, CodingStats], vq: Curve | None) -> list[str]:
    lines = [
        "", "## vqcodec: bits per code, level by level", "",
        "coded = range-coder output of that level (each tile's symbols coded alone); cross-entropy = −log2 of the "
        "integer prior's probability of each code (overhead = coded / cross-entropy − 1); unigram = entropy of the "
        "codes' histogram over all images (what a coder without context would spend).", "",
        "| model | level | codes / image | coded | cross-entropy | overhead | unigram | cross-entropy / unigram |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, s in coding.items():
        for row in s.table():
            lines.append(
                f"| {setting} | {row['level']} | {row['codes_per_image']:,.0f} | {row['coded_bits_per_code']:.3f} | "
                f"{row['cross_entropy_bits_per_code']:.3f} | {_num(row['coding_overhead_percent'], 2, True)} % | "
                f"{row['unigram_entropy_bits_per_code']:.3f} | {_num(row['cross_entropy_over_unigram'], 3)} |")
    for setting, s in coding.items():
        if not s.pixels:
            continue
        payload = s.payload_bits / s.pixels
        file_bpp = None
        if vq is not None and setting in vq.settings:
            file_bpp = vq.bpp[vq.settings.index(setting)]
        extra = "" if file_bpp is None else (
            f" of {file_bpp:.4f} bpp in whole files (header and checksums: {100 * (1 - payload / file_bpp):.1f}%)")
        lines += ["", f"{setting}: range-coded payload {payload:.4f} bpp{extra}."]
    return lines
