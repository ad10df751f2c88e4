"""vqcodec benchmark: the command end to end on small images, result files, Bjøntegaard deltas,
coding statistics, reference files, the MS-SSIM convention and the optional perceptual metric
(ColorVideoVDP: carried through JSON, CSV, summary and plot, and skipped with a note when absent)."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from vqcodec_cli.main import main as cli_main

from vqcodec.bench import bd, perceptual
from vqcodec.bench.coding_stats import coding_stats
from vqcodec.bench.plot import SIZE_PX, SIZE_PX_PERCEPTUAL
from vqcodec.bench.report import RESULT_KEYS, Curve, markdown_summary, to_compressai, validate_result
from vqcodec.codec import compress
from vqcodec.coding.tile_codec import encode_tiles
from vqcodec.imageio import to_model_input
from vqcodec.metrics import ms_ssim
from vqcodec.testing import smooth_image, tiny_codec_model, write_tiny_codec_model

# A published-style reference curve (4 points) in CompressAI's older key names
REFERENCE = {
    "name": "mbt2018", "description": "official results (mse)",
    "results": {"psnr": [26.8, 28.9, 30.9, 33.0], "bpp": [0.072, 0.153, 0.264, 0.429]},
}


@pytest.fixture(scope="module")
def bench_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(folder of three 48x64 images, tiny model file, valid reference file)."""
    root = tmp_path_factory.mktemp("bench")
    images = root / "images"
    images.mkdir()
    for seed in range(3):
        Image.fromarray(smooth_image(48, 64, seed)).save(images / f"im{seed}.png")
    model = write_tiny_codec_model(root / "tiny.safetensors")
    reference = root / "mbt2018.json"
    reference.write_text(json.dumps(REFERENCE))
    return images, model, reference


def _run(args: list[str]):
    return CliRunner().invoke(cli_main, ["benchmark", *args])


def test_end_to_end(bench_inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    images, model, reference = bench_inputs
    out = tmp_path / "results"
    res = _run([str(images), "--codecs", "vqcodec,jpeg", "--quality", "jpeg=10,30,60,90", "--model", str(model),
                "--reference", str(reference), "--out", str(out), "--no-cvvdp"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "jpeg-images.csv", "jpeg.json", "rd.png", "summary.md", "vqcodec-coding.json", "vqcodec-images.csv",
        "vqcodec.json"]

    # CompressAI's schema: name, description, results with five equally long lists of numbers
    for name, points in (("jpeg", 4), ("vqcodec", 1)):
        obj = json.loads((out / f"{name}.json").read_text())
        assert obj["name"] == name and isinstance(obj["description"], str) and obj["description"]
        assert set(obj["results"]) == set(RESULT_KEYS)  # no cvvdp key when it did not run
        for key in RESULT_KEYS:
            values = obj["results"][key]
            assert len(values) == points and all(isinstance(v, float) and math.isfinite(v) for v in values), key
        assert all(0 < v <= 1 for v in obj["results"]["ms-ssim-rgb"])
        assert obj["results"]["bpp"] == sorted(obj["results"]["bpp"])
        validate_result(obj, name, complete=True)
        with open(out / f"{name}-images.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 3 * points and {r["image"] for r in rows} == {"im0.png", "im1.png", "im2.png"}
        means = [np.mean([float(r["bpp"]) for r in rows if r["setting"] == s]) for s in obj["settings"]]
        assert np.allclose(means, obj["results"]["bpp"], rtol=1e-5)  # bpp = mean of per-image bpp

    with Image.open(out / "rd.png") as im:
        assert im.format == "PNG" and im.size == SIZE_PX

    summary = (out / "summary.md").read_text()
    assert summary == res.stdout.strip() + "\n"
    assert "CVVDP not measured (--no-cvvdp)." in summary and "## Perceptual quality" not in summary
    table = summary.split("## Rate-distortion summary")[1].split("\n\n")[2].splitlines()[2:]
    assert [row.split("|")[1].strip() for row in table] == ["vqcodec", "JPEG", "mbt2018 (reference)"]
    vq_row = table[0].split("|")
    assert vq_row[4].strip() == "(this)"
    jpeg_row = table[1].split("|")
    assert jpeg_row[4].strip().startswith("–") and "¹" in jpeg_row[4]  # one vqcodec point: no BD-rate
    assert "¹ vqcodec's curve has 1 rate-distortion point; the pchip method needs at least 2" in summary
    assert "## At vqcodec's bitrate (model=tiny" in summary

    coding = json.loads((out / "vqcodec-coding.json").read_text())["model=tiny"]
    assert [lv["level"] for lv in coding["levels"]] == ["top", "bottom"]
    assert coding["images"] == 3
    vq = json.loads((out / "vqcodec.json").read_text())
    assert coding["payload_bpp"] < vq["results"]["bpp"][0]  # the file adds a header and checksums

    again = _run([str(images), "--codecs", "jpeg", "--out", str(out)])  # refused before measuring anything
    assert again.exit_code == 1 and "already holds" in again.stderr and "--force" in again.stderr


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / mse)


def _pillow_file(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# codec -> (its --quality value, the setting's name, the file as the library makes it with docs' settings, decode)
CLASSICAL = {
    "webp": ("50", "quality=50", lambda a: _pillow_file(a, "WEBP", quality=50, method=6), _pillow_pixels),
    "avif": ("40", "quality=40", lambda a: _pillow_file(a, "AVIF", quality=40, speed=6, subsampling="4:2:0",
                                                         max_threads=1), _pillow_pixels),
    "jp2": ("32", "target_dB=32", lambda a: _pillow_file(a, "JPEG2000", quality_mode="dB", quality_layers=[32.0],
                                                          irreversible=True, mct=1), _pillow_pixels),
    "jxl": ("2", "distance=2", lambda a: __import__("imagecodecs").jpegxl_encode(a, effort=7, distance=2.0),
            lambda d: np.asarray(__import__("imagecodecs").jpegxl_decode(d))),
}


@pytest.mark.parametrize("codec", list(CLASSICAL))
def test_webp_avif_jpeg_2000_and_jpeg_xl_end_to_end(codec: str, bench_inputs: tuple[Path, Path, Path],
                                                     tmp_path: Path) -> None:
    """One point of each through the command: every image's size and PSNR in the CSV are those of the file
    the codec's library writes here with the settings of docs (bench/classical.py), decoded by the library
    and scored with numpy; the JSON holds their means."""
    from vqcodec.bench.classical import classical_codecs

    available, missing = classical_codecs()
    if codec not in available:
        pytest.skip(f"{codec}: {missing[codec]}")
    quality, setting, encode, decode = CLASSICAL[codec]
    images, _, _ = bench_inputs
    out = tmp_path / "results"
    res = _run([str(images), "--codecs", codec, "--quality", f"{codec}={quality}", "--out", str(out), "--no-cvvdp"])
    assert res.exit_code == 0, res.output
    rows = _csv_rows(out / f"{codec}-images.csv")
    assert sorted(r["image"] for r in rows) == ["im0.png", "im1.png", "im2.png"]
    bpps, psnrs = [], []
    for row in rows:
        pixels = np.asarray(Image.open(images / row["image"]).convert("RGB"))
        data = encode(pixels)
        decoded = decode(data)
        assert decoded.shape == pixels.shape and not np.array_equal(decoded, pixels)  # lossy, and decoded whole
        assert row["setting"] == setting and int(row["bytes"]) == len(data), (row, len(data))
        assert float(row["bpp"]) == pytest.approx(8 * len(data) / (48 * 64), rel=1e-5)  # the CSV's 6 digits
        assert float(row["psnr"]) == pytest.approx(_psnr(pixels, decoded), rel=1e-5)
        assert 20 < float(row["psnr"]) < 60 and 0.05 < float(row["bpp"]) < 8
        bpps.append(8 * len(data) / (48 * 64))
        psnrs.append(_psnr(pixels, decoded))
    obj = json.loads((out / f"{codec}.json").read_text())
    validate_result(obj, codec, complete=True)
    assert obj["settings"] == [setting]
    assert obj["results"]["bpp"] == pytest.approx([np.mean(bpps)], rel=1e-9)
    assert obj["results"]["psnr-rgb"] == pytest.approx([np.mean(psnrs)], rel=1e-9)
    label = available[codec].label
    assert any(line.startswith(f"| {label} |") for line in (out / "summary.md").read_text().splitlines())


def test_malformed_reference_is_one_error_line(bench_inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    images, _, _ = bench_inputs
    broken = tmp_path / "broken.json"
    for text, expect in (('{"name": "x", "results": {"bpp": [0.1, 0.2]', "is not valid JSON"),
                         ('{"name": "x", "results": {"bpp": [0.1, 0.2], "psnr": [30]}}', "has 1 values"),
                         ('{"name": "x", "results": {"bpp": [0.1], "psnr-rgb": ["a"]}}', "list of numbers"),
                         ('[1, 2]', "not a CompressAI result file")):
        broken.write_text(text)
        res = _run([str(images), "--codecs", "jpeg", "--reference", str(broken), "--out", str(tmp_path / "o")])
        assert res.exit_code == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vqcodec: error: reference ") and expect in lines[0], lines
        assert not (tmp_path / "o").exists()


def test_bad_options(bench_inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    images, _, _ = bench_inputs
    for args, expect in ((["--codecs", "jpeg,bpg"], "--codecs takes"),
                         (["--quality", "vqcodec=1,2"], "use --model"),
                         (["--quality", "jpeg=high"], "must be numbers"),
                         (["--codecs", "jpeg", "--quality", "webp=10"], "not in --codecs")):
        res = _run([str(images), *args, "--out", str(tmp_path / "o")])
        assert res.exit_code == 1 and res.stderr.startswith("vqcodec: error: ") and expect in res.stderr, res.stderr


# -- the perceptual metric (ColorVideoVDP) -------------------------------------------------------------------


class FakeCVVDP:
    """Stands in for ColorVideoVDP where the wiring is tested: fast, and known without the package."""

    description = "FakeVDP 1.0, JOD (10 = no visible difference), display test"

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> float:
        return 10.0 - float(np.abs(reference.astype(np.float64) - decoded).mean()) / 10.0


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_perceptual_metric_in_json_csv_summary_and_plot(bench_inputs: tuple[Path, Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    images, model, reference = bench_inputs
    monkeypatch.setattr(perceptual, "unavailable", lambda: None)
    monkeypatch.setattr(perceptual, "ColorVideoVDP", FakeCVVDP)
    out = tmp_path / "results"
    res = _run([str(images), "--codecs", "vqcodec,jpeg", "--quality", "jpeg=10,40,90", "--model", str(model),
                "--reference", str(reference), "--out", str(out), "--max-images", "2"])
    assert res.exit_code == 0, res.output
    assert "skipped" not in res.stderr

    for name, points in (("jpeg", 3), ("vqcodec", 1)):
        obj = json.loads((out / f"{name}.json").read_text())
        assert set(obj["results"]) == {*RESULT_KEYS, "cvvdp"}
        rows = _csv_rows(out / f"{name}-images.csv")
        assert len(rows) == 2 * points
        expected = [np.mean([float(r["cvvdp"]) for r in rows if r["setting"] == s]) for s in obj["settings"]]
        assert np.allclose(obj["results"]["cvvdp"], expected, rtol=1e-5)  # the mean of per-image values
        assert all(0 < v < 10 for v in obj["results"]["cvvdp"])
        assert validate_result(obj, name, complete=True).cvvdp == obj["results"]["cvvdp"]
    jpeg = json.loads((out / "jpeg.json").read_text())["results"]["cvvdp"]
    assert jpeg == sorted(jpeg)  # more bits, fewer visible differences

    with Image.open(out / "rd.png") as im:
        assert im.size == SIZE_PX_PERCEPTUAL  # the third panel

    summary = (out / "summary.md").read_text()
    assert f"CVVDP = {FakeCVVDP.description}, each image at its own size" in summary
    section = summary.split("## Perceptual quality: CVVDP (ColorVideoVDP)")[1].split("\n\n")[2].splitlines()
    assert section[0].startswith("| codec | points | BD-rate (CVVDP) | BD-JOD | CVVDP @0.1 |")
    assert [row.split("|")[1].strip() for row in section[2:]] == ["vqcodec", "JPEG", "mbt2018 (reference)"]
    assert "no CVVDP values in its result file" in summary  # the reference has none
    points_table = summary.split("## vqcodec's points against the others")[1].split("\n\n")[2].splitlines()
    assert points_table[0].startswith("| point | bpp | PSNR | MS-SSIM | CVVDP | PSNR − JPEG | MS-SSIM dB − JPEG | "
                                      "CVVDP − JPEG | encode s |")
    vq = json.loads((out / "vqcodec.json").read_text())["results"]
    assert points_table[2].split("|")[5].strip() == f"{vq['cvvdp'][0]:.2f}"
    assert "| CVVDP (JOD) | Δ CVVDP |" in summary.split("## At vqcodec's bitrate")[1]


def test_benchmark_runs_without_cvvdp_and_says_so(bench_inputs: tuple[Path, Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    images, _, _ = bench_inputs
    monkeypatch.setitem(sys.modules, "pycvvdp", None)  # `import pycvvdp` now fails as if it were not installed
    monkeypatch.setitem(sys.modules, "torchvision", None)
    assert "ColorVideoVDP is not installed" in perceptual.unavailable()

    required = _run([str(images), "--codecs", "jpeg", "--cvvdp", "--out", str(tmp_path / "o")])
    assert required.exit_code == 1 and "vqcodec: error: --cvvdp: ColorVideoVDP is not installed" in required.stderr
    assert not (tmp_path / "o").exists()  # refused before anything ran

    out = tmp_path / "results"
    res = _run([str(images), "--codecs", "jpeg", "--quality", "jpeg=20,80", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "cvvdp: skipped (ColorVideoVDP is not installed" in res.stderr
    summary = (out / "summary.md").read_text()
    assert "CVVDP not measured: skipped (ColorVideoVDP is not installed" in summary
    assert "## Perceptual quality" not in summary
    assert "cvvdp" not in json.loads((out / "jpeg.json").read_text())["results"]
    assert "cvvdp" not in _csv_rows(out / "jpeg-images.csv")[0]
    with Image.open(out / "rd.png") as im:
        assert im.size == SIZE_PX  # two panels


def test_summary_perceptual_bd_and_margins() -> None:
    jpeg = Curve("jpeg", "", [r / 1e4 for r in RA[::-1]], PA[::-1], [0.9] * 4, cvvdp=[6.0, 7.0, 8.0, 9.0])
    vq = Curve("vqcodec", "", [r / 1e4 for r in RT[::-1]], PT[::-1], [0.95] * 4,
               [1.0] * 4, [2.0] * 4, settings=[f"model={i}" for i in range(4)], cvvdp=[6.5, 7.5, 8.5, 9.2])
    lines = markdown_summary([vq, jpeg]).splitlines()
    row = next(line for line in lines if line.startswith("| JPEG | 4 | ") and "JOD" in line)
    rate = bd.bd_rate(jpeg.bpp, jpeg.cvvdp, vq.bpp, vq.cvvdp)
    gain = bd.bd_psnr(jpeg.bpp, jpeg.cvvdp, vq.bpp, vq.cvvdp)
    assert row.startswith(f"| JPEG | 4 | {rate:+.1f} % | {gain:+.2f} JOD | ") and rate < 0 < gain
    at = lines.index("## vqcodec's points against the others")
    first, second = lines[at + 6].split("|"), lines[at + 7].split("|")
    assert first[5].strip() == "6.50" and first[-4].strip() == "–"  # vqcodec's CVVDP; below JPEG's range
    assert second[5].strip() == "7.50"
    assert second[-4].strip() == f"{7.5 - np.interp(vq.bpp[1], jpeg.bpp, jpeg.cvvdp):+.2f}"  # the margin over JPEG
    obj = to_compressai(vq)
    assert obj["results"]["cvvdp"] == vq.cvvdp and validate_result(obj, "x").cvvdp == vq.cvvdp


@pytest.mark.slow
def test_cvvdp_end_to_end(bench_inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The real ColorVideoVDP through the command (skipped where the [bench] extra's cvvdp is absent)."""
    why = perceptual.unavailable()
    if why is not None:
        pytest.skip(why)
    images, _, _ = bench_inputs
    out = tmp_path / "results"
    res = _run([str(images), "--codecs", "jpeg", "--quality", "jpeg=5,90", "--cvvdp", "--out", str(out)])
    assert res.exit_code == 0, res.output
    low, high = json.loads((out / "jpeg.json").read_text())["results"]["cvvdp"]
    assert 0 < low < high < 10  # JPEG at quality 5 is visibly worse than at 90; neither is lossless
    assert "CVVDP = ColorVideoVDP 0.5.7, JOD (10 = no visible difference), display standard_4k" in res.stdout


# -- Bjøntegaard deltas --------------------------------------------------------------------------------------

# Sample 1 of the public VCEG-M33 reference scripts (kbit/s, dB)
R1, P1 = [686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42]
R2, P2 = [893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24]
# "Test 1" of the bjontegaard package (libx265 presets)
RA, PA = [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]
RT, PT = [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]


def _vceg_m33_rate(r1, p1, r2, p2) -> float:
    """VCEG-M33 as Bjøntegaard wrote it: cubic fit of ln(rate) over PSNR, integrated over the overlap."""
    i1, i2 = np.polyint(np.polyfit(p1, np.log(r1), 3)), np.polyint(np.polyfit(p2, np.log(r2), 3))
    lo, hi = max(min(p1), min(p2)), min(max(p1), max(p2))
    diff = (np.polyval(i2, hi) - np.polyval(i2, lo) - np.polyval(i1, hi) + np.polyval(i1, lo)) / (hi - lo)
    return (math.exp(diff) - 1) * 100


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_bd_identical_curves_give_zero(method: str) -> None:
    assert bd.bd_rate(RA, PA, RA, PA, method) == pytest.approx(0, abs=1e-9)
    assert bd.bd_psnr(RA, PA, RA, PA, method) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_bd_half_the_rate_gives_minus_50_percent(method: str) -> None:
    half = [r / 2 for r in RA]
    assert bd.bd_rate(RA, PA, half, PA, method) == pytest.approx(-50, abs=1e-9)
    assert bd.bd_rate(half, PA, RA, PA, method) == pytest.approx(100, abs=1e-9)
    assert bd.bd_psnr(RA, PA, RA, [p + 0.5 for p in PA], method) == pytest.approx(0.5, abs=1e-9)


# Curves whose uneven steps make PCHIP's end slopes fall back to 0 (the shape-preserving rule)
S1, Q1 = [0.1, 0.12, 0.5, 0.52, 2.0], [24.0, 29.0, 29.5, 33.5, 34.0]
S2, Q2 = [0.09, 0.3, 0.31, 1.5], [25.0, 26.0, 31.0, 33.0]


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PCHIP's slope at each point, as scipy's PchipInterpolator (what the bjontegaard package calls) defines
    it: Fritsch-Carlson's weighted harmonic mean of the neighbouring secants inside (0 where they differ in
    sign), Moler's one-sided three-point estimate at the ends, kept monotone; a straight line through 2 points."""
    h, m = np.diff(x), np.diff(y) / np.diff(x)
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros(len(x))
    for k in range(1, len(x) - 1):
        if m[k - 1] * m[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])

    def end(h0: float, h1: float, m0: float, m1: float) -> float:
        slope = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(slope) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(slope) > 3 * abs(m0):
            return 3 * m0
        return slope

    d[0], d[-1] = end(h[0], h[1], m[0], m[1]), end(h[-1], h[-2], m[-1], m[-2])
    return d


def _pchip_mean(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """The mean over [lo, hi] of the cubic Hermite interpolant of (x, y) with PCHIP's slopes, integrated by
    3-point Gauss-Legendre on each piece between knots (exact for cubics)."""
    d = _pchip_slopes(x, y)
    nodes, weights = np.polynomial.legendre.leggauss(3)
    cuts = np.unique(np.clip(np.concatenate([[lo, hi], x]), lo, hi))
    total = 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):
        at = (a + b) / 2 + (b - a) / 2 * nodes
        k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
        step = x[k + 1] - x[k]
        t = (at - x[k]) / step
        f = ((2 * t**3 - 3 * t**2 + 1) * y[k] + (t**3 - 2 * t**2 + t) * step * d[k]
             + (3 * t**2 - 2 * t**3) * y[k + 1] + (t**3 - t**2) * step * d[k + 1])
        total += (b - a) / 2 * float(weights @ f)
    return total / (hi - lo)


def _pchip_bd(r1, p1, r2, p2) -> tuple[float, float]:
    """(BD-rate %, BD-PSNR) of curve 2 against curve 1 with the PCHIP interpolation, written out here with
    numpy alone (natural logarithms: PCHIP commutes with scaling either axis, so the result is bd.py's)."""
    a, b = np.argsort(r1), np.argsort(r2)
    r1, p1, r2, p2 = (np.asarray(v, np.float64)[o] for v, o in ((r1, a), (p1, a), (r2, b), (p2, b)))
    lo, hi = max(p1[0], p2[0]), min(p1[-1], p2[-1])
    rate = (math.exp(_pchip_mean(p2, np.log(r2), lo, hi) - _pchip_mean(p1, np.log(r1), lo, hi)) - 1) * 100
    lo, hi = max(np.log(r1[0]), np.log(r2[0])), min(np.log(r1[-1]), np.log(r2[-1]))
    return rate, _pchip_mean(np.log(r2), p2, lo, hi) - _pchip_mean(np.log(r1), p1, lo, hi)


def test_bd_known_values() -> None:
    # VCEG-M33's cubic method: the values its reference scripts print for Sample 1 (31.40 %, -1.18 dB),
    # and an independent evaluation of its formulas
    assert bd.bd_rate(R1, P1, R2, P2, "cubic") == pytest.approx(31.397374054908, abs=1e-6)
    assert bd.bd_rate(R1, P1, R2, P2, "cubic") == pytest.approx(_vceg_m33_rate(R1, P1, R2, P2), abs=1e-6)
    assert bd.bd_psnr(R1, P1, R2, P2, "cubic") == pytest.approx(-1.184897921770, abs=1e-6)
    assert bd.bd_rate(RA, PA, RT, PT, "cubic") == pytest.approx(-4.420462706, abs=1e-6)
    assert bd.bd_rate(RA, PA, RT, PT, "cubic") == pytest.approx(_vceg_m33_rate(RA, PA, RT, PT), abs=1e-6)
    # PCHIP (JCT-VC/JVET common test conditions): the bjontegaard package's values, which the PCHIP
    # integration written out above (_pchip_bd) gives as well
    assert _pchip_bd(RA, PA, RT, PT) == pytest.approx((-4.417485350589, 0.119692785425), abs=1e-9)
    assert _pchip_bd(R1, P1, R2, P2) == pytest.approx((31.379878202398, -1.183472404622), abs=1e-9)
    assert bd.bd_rate(RA, PA, RT, PT) == pytest.approx(-4.417485350589, abs=1e-6)
    assert bd.bd_psnr(RA, PA, RT, PT) == pytest.approx(0.119692785425, abs=1e-6)
    assert bd.bd_rate(R1, P1, R2, P2) == pytest.approx(31.379878202398, abs=1e-6)
    assert bd.bd_psnr(R1, P1, R2, P2) == pytest.approx(-1.183472404622, abs=1e-6)
    # points in any order, and curves of different lengths
    assert bd.bd_rate(RA[::-1], PA[::-1], RT, PT) == pytest.approx(-4.417485350589, abs=1e-6)
    assert math.isfinite(bd.bd_rate(RA, PA, RT[:3], PT[:3]))


@pytest.mark.parametrize(("anchor", "test"), [
    ((RA, PA), (RT, PT)), ((R1, P1), (R2, P2)), ((RT, PT), (RA, PA)),
    ((S1, Q1), (S2, Q2)),  # end slopes set to 0 by the monotone rule
    ((RA, PA), (RT[:3], PT[:3])), ((RA, PA), (RT[1:3], PT[1:3])),  # 3 points; 2 points: a straight line
    ((RA[::-1], PA[::-1]), (RT, PT)),
])
def test_bd_pchip_is_an_independent_pchip_integration(anchor, test) -> None:
    rate, gain = _pchip_bd(*anchor, *test)
    assert bd.bd_rate(*anchor, *test) == pytest.approx(rate, rel=1e-9, abs=1e-9)
    assert bd.bd_psnr(*anchor, *test) == pytest.approx(gain, rel=1e-9, abs=1e-9)


def test_bd_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(bd.BDUnavailable, match="has 1 rate-distortion point; the pchip method needs at least 2"):
        bd.bd_rate(RA, PA, [0.4], [28.7])
    with pytest.raises(bd.BDUnavailable, match="needs at least 4"):
        bd.bd_rate(RA, PA, RT[:3], PT[:3], "cubic")
    with pytest.raises(bd.BDUnavailable, match="share no quality range"):
        bd.bd_rate(RA, PA, RT, [p + 20 for p in PT])
    with pytest.raises(bd.BDUnavailable, match="does not rise"):
        bd.bd_rate(RA, PA, RT, [35, 36, 35.5, 37])


def test_summary_bd_cells_with_multi_point_curves() -> None:
    jpeg = Curve("jpeg", "", [r / 1e4 for r in RA], PA, [0.9] * 4, settings=["q"] * 4, median_encode_s=0.003,
                 median_decode_s=0.002)
    vq = Curve("vqcodec", "", [r / 1e4 for r in RT], PT, [0.95] * 4, settings=[f"model={i}" for i in range(4)],
               median_encode_s=2.0, median_decode_s=6.0)
    summary = markdown_summary([vq, jpeg])
    row = next(line for line in summary.splitlines() if line.startswith("| JPEG |"))
    assert f"| {bd.bd_rate(jpeg.bpp, PA, vq.bpp, PT):+.1f} % | {bd.bd_psnr(jpeg.bpp, PA, vq.bpp, PT):+.2f} dB |" in row
    assert "| 3.0 | 2.0 |" in row  # median ms per image
    assert summary.count("## At vqcodec's bitrate") == 4 and "¹" not in summary


def test_points_table_gives_each_points_margins_and_times() -> None:
    jpeg = Curve("jpeg", "", [0.2, 0.4, 0.8], [25.0, 28.0, 31.0], [0.90, 0.94, 0.97])
    vq = Curve("vqcodec", "", [0.1, 0.3], [26.0, 28.5], [0.92, 0.96], encoding_time=[1.5, 2.5],
               decoding_time=[3.25, 6.5], settings=["model=a@0.5", "model=a"])
    lines = markdown_summary([vq, jpeg]).splitlines()
    at = lines.index("## vqcodec's points against the others")
    assert lines[at + 4] == "| point | bpp | PSNR | MS-SSIM | PSNR − JPEG | MS-SSIM dB − JPEG | encode s | decode s |"
    assert lines[at + 6] == "| model=a@0.5 | 0.100 | 26.00 | 0.9200 | – | – | 1.50 | 3.25 |"  # below JPEG's range
    ms = -10 * np.log10(1 - 0.96) + 10 * np.log10(1 - 0.92)  # JPEG's MS-SSIM at 0.3 bpp: 0.92
    assert lines[at + 7] == f"| model=a | 0.300 | 28.50 | 0.9600 | +2.00 | {ms:+.2f} | 2.50 | 6.50 |"


# -- coding statistics ---------------------------------------------------------------------------------------


def test_coding_stats_count_the_encoders_bits() -> None:
    model = tiny_codec_model()
    img = smooth_image(48, 64, 5)
    data = compress(img, model)
    from_file = coding_stats(model, img, data)
    recomputed = coding_stats(model, img)
    payloads = encode_tiles(model.priors, model.vqvae.encode(to_model_input(img, 8)), model.tile)
    assert from_file.payload_bits == recomputed.payload_bits == 8 * sum(len(p) for p in payloads)
    assert from_file.payload_bits < 8 * len(data)
    table = from_file.table()
    assert [r["level"] for r in table] == ["top", "bottom"] and [r["codes"] for r in table] == [6 * 8, 12 * 16]
    for r in table:  # the coder cannot beat the prior's cross-entropy; the cross-entropy is finite
        assert r["coded_bits_per_code"] >= r["cross_entropy_bits_per_code"] > 0
        assert 0 < r["unigram_entropy_bits_per_code"] <= math.log2(32)
    both = from_file.add(recomputed)
    assert both.images == 2 and both.table()[0]["codes_per_image"] == 48


# -- MS-SSIM convention and light imports ------------------------------------------------------------------


def test_ms_ssim_agrees_with_pytorch_msssim() -> None:
    torch_msssim = pytest.importorskip("pytorch_msssim")
    import torch

    a = smooth_image(176, 200, 3)
    b = np.clip(a.astype(np.int16) + np.random.default_rng(0).integers(-12, 13, a.shape), 0, 255).astype(np.uint8)
    as_tensor = lambda x: torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None]  # noqa: E731
    theirs = float(torch_msssim.ms_ssim(as_tensor(a), as_tensor(b), data_range=255, size_average=True))
    assert ms_ssim(a, b, 255) == pytest.approx(theirs, abs=1e-6)


def test_light_imports() -> None:
    code = ("import sys, vqcodec, vqcodec_cli.main; "
            "print(sorted(m for m in sys.modules if m.startswith(('vqcodec.bench', 'matplotlib', 'bjontegaard'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
