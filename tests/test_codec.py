"""Tests for the codec: exact code round trips (2 and 3 levels), bit-exactness across processes, thread
counts and batch shapes, coded size against the model's cross-entropy, fuzzing of whole files, the
golden file, model mismatch, the command line and the Python API.

Golden files (tests/data/golden.png, golden.vqc, golden.sha256) pin the format and the default model's
coding. When the model or the format changes on purpose, regenerate them from the repository root with

    PYTHONPATH=tests .venv/bin/python -c "from tests.test_codec import write_golden_files; write_golden_files()"

which (1) writes golden_image() to tests/data/golden.png, (2) compresses that PNG with the default model
to tests/data/golden.vqc and (3) writes the SHA-256 of the decoded pixel bytes (decompress(...).tobytes())
to tests/data/golden.sha256; then review and commit the three files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzzing import header_end, mutate, with_header_crc  # tests/fuzzing.py (pytest puts tests/ on sys.path)
from PIL import Image

import vqcodec
from vqcodec.bitstream import Bitstream, pack, unpack
from vqcodec.bundle import CodecModel, load_codec_model
from vqcodec.codec import compress, decode_codes, decompress, decompress_image, encode_codes, tile_grid
from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.imageio import from_tensor, to_tensor
from vqcodec.intprior import IntPrior, Stepper
from vqcodec.prior import PixelCNNPrior, PriorConfig
from vqcodec.vqvae import VQVAE, VQVAEConfig

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]


# -- fixtures and helpers -----------------------------------------------------------------------------




@pytest.fixture(scope="module")
def model() -> CodecModel:
    return load_codec_model()


def smooth_image(height: int, width: int, seed: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """Random-ish smooth image: a few sinusoids per channel plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    img = np.full((height, width, channels), 0.5)
    for c in range(channels):
        for _ in range(3):
            fx, fy, phase, amp = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 6), rng.uniform(0.1, 0.25)
            img[..., c] += amp * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    img += rng.normal(0, 0.02, img.shape)
    full = np.iinfo(dtype).max
    out = (np.clip(img, 0, 1) * full).round().astype(dtype)
    return out[..., 0] if channels == 1 else out


def image_codes(m: CodecModel, pixels: np.ndarray) -> list[torch.Tensor]:
    """Code maps (bottom first, each (1, H_l, W_l)) exactly as compress computes them."""
    bits = 8 if pixels.dtype == np.uint8 else 16
    x = to_tensor(pixels, bits)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return m.vqvae.encode(x)


def reference_pixels(m: CodecModel, pixels: np.ndarray) -> np.ndarray:
    """What decompress(compress(pixels)) must give when the codes survive coding exactly."""
    bits = 8 if pixels.dtype == np.uint8 else 16
    recon = m.vqvae.decode(image_codes(m, pixels), pixels.shape[0], pixels.shape[1]).clamp(0, 1)
    if pixels.ndim == 2:
        recon = recon.mean(1, keepdim=True)
    out = from_tensor(recon, bits)
    return out[..., 0] if pixels.ndim == 2 else out


def code_shapes(codes: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [(c.shape[1], c.shape[2]) for c in codes]


def assert_codes_equal(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for level, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"level {level}: {g.shape} != {w.shape}"
        assert torch.equal(g.cpu(), w.cpu()), f"level {level}: {(g.cpu() != w.cpu()).sum()} codes differ"


def tiny_codec_model(levels: int = 3, tile: int = 16, seed: int = 0) -> CodecModel:
    """A random-init codec model: small VQ-VAE (codebooks seeded from encoder outputs so the codes
    vary) and a random PixelCNN per level converted to integers, configured as build_prior does."""
    torch.manual_seed(seed)
    num_codes = 32
    vqvae = VQVAE(VQVAEConfig(levels=levels, hidden=16, res_channels=8, res_blocks=1, num_codes=num_codes,
                              code_dim=8))
    batch = torch.from_numpy(np.stack([smooth_image(32, 32, s) for s in range(4)])).permute(0, 3, 1, 2) / 255.0
    vqvae.train()
    with torch.no_grad():
        vqvae(batch)  # data-dependent codebook initialisation
    vqvae.eval()
    top = levels - 1
    gen = torch.Generator().manual_seed(seed)
    priors = []
    for level in range(levels):
        cfg = PriorConfig(num_codes=num_codes, channels=16, layers=2, attention_every=1 if level == top else 0,
                          heads=2, out_blocks=1, cond_levels=top - level, cond_channels=16, cond_blocks=1)
        prior = PixelCNNPrior(cfg).eval()
        calibration = []
        for _ in range(2):
            codes = torch.randint(0, num_codes, (4, 8, 8), generator=gen)
            cond = [torch.randint(0, num_codes, (4, 8 >> k, 8 >> k), generator=gen) for k in range(1, top - level + 1)]
            calibration.append((codes, cond or None, None))
        priors.append(IntPrior.from_float(prior, calibration))
    return CodecModel(vqvae=vqvae, priors=priors, tile=tile, fingerprint=bytes(range(16)), name=f"tiny{levels}",
                      device=torch.device("cpu"))


def coded_bits_and_cross_entropy(m: CodecModel, codes: list[torch.Tensor]) -> tuple[int, float, int]:
    """(payload bits, sum of -log2 p(code) under the normalised encoder probabilities, tiles)."""
    payloads = encode_codes(m, codes)
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], m.tile)
    assert len(payloads) == len(tiles)
    ce = 0.0
    for t in tiles:
        for level in reversed(range(m.levels)):
            win = [codes[lv][0][t.window(lv)][None] for lv in range(level, m.levels)]
            probs = m.priors[level].parallel_probs(win[0], win[1:] or None)[0]
            p = probs / probs.sum(-1, keepdim=True)
            ce -= float(torch.log2(p.gather(-1, win[0][0][..., None])).sum())
    return 8 * sum(len(p) for p in payloads), ce, len(tiles)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging (SIGALRM, main thread on POSIX; a no-op elsewhere)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- 1. code and image round trips with the default model ---------------------------------------------


@pytest.mark.parametrize(("height", "width", "seed"), [(16, 16, 1), (40, 72, 2), (72, 40, 3), (100, 36, 4)])
def test_code_round_trip_is_exact(model, height, width, seed):
    codes = image_codes(model, smooth_image(height, width, seed))
    assert code_shapes(codes) == model.vqvae.code_shapes(height, width)
    assert len(torch.unique(codes[0])) > 1  # a real code map, not a constant one
    payloads = encode_codes(model, codes)
    assert_codes_equal(decode_codes(model, code_shapes(codes), payloads), codes)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 13), (33, 65)])
def test_odd_sizes_round_trip(model, height, width):
    img = smooth_image(height, width, seed=height * 1000 + width)
    out = decompress(compress(img, model), model)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, reference_pixels(model, img))


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((9, 11), np.uint8), ((12, 10), np.uint16), ((10, 14, 3), np.uint16), ((5, 6, 3), np.uint8)],
)
def test_dtype_and_channels_are_kept(model, shape, dtype):
    img = smooth_image(shape[0], shape[1], seed=7, channels=shape[2] if len(shape) == 3 else 1, dtype=dtype)
    assert img.shape == shape
    data = compress(img, model)
    out = decompress(data, model)
    assert out.shape == shape and out.dtype == dtype
    np.testing.assert_array_equal(out, reference_pixels(model, img))
    image = decompress_image(data, model)
    assert image.bit_depth == (8 if dtype == np.uint8 else 16)
    assert image.pixels.shape[2] == (shape[2] if len(shape) == 3 else 1)


# -- 2. a 3-level model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model3() -> CodecModel:
    return tiny_codec_model(levels=3, tile=16)


@pytest.mark.parametrize("tile", [16, 8, 4])
def test_three_level_code_round_trip(model3, tile):
    m = dataclasses.replace(model3, tile=tile)
    codes = image_codes(m, smooth_image(48, 64, seed=11))
    assert code_shapes(codes) == [(12, 16), (6, 8), (3, 4)]
    assert all(len(torch.unique(c)) > 1 for c in codes[:2])
    assert_codes_equal(decode_codes(m, code_shapes(codes), encode_codes(m, codes)), codes)
    # uniformly random codes exercise every symbol and the conditioning far from the data
    gen = torch.Generator().manual_seed(tile)
    rand = [torch.randint(0, 32, (1, h, w), generator=gen) for h, w in code_shapes(codes)]
    assert_codes_equal(decode_codes(m, code_shapes(rand), encode_codes(m, rand)), rand)


def test_three_level_compress_decompress(model3):
    img = smooth_image(48, 64, seed=12)
    data = compress(img, model3)
    assert unpack(data).header.levels == 3
    out = decompress(data, model3)
    np.testing.assert_array_equal(out, reference_pixels(model3, img))
    with pytest.raises(VQCodecError, match="levels"):  # right fingerprint, wrong layout
        decompress(data, dataclasses.replace(tiny_codec_model(levels=2, tile=16), fingerprint=model3.fingerprint))


# -- 3. bit-exactness across processes and thread counts ---------------------------------------------

_WORKER = """
import sys
import numpy as np
import torch

torch.set_num_threads(int(sys.argv[1]))
from vqcodec import compress, decompress

img = np.load(sys.argv[2])
with open(sys.argv[3], "wb") as f:
    f.write(compress(img))
with open(sys.argv[4], "rb") as f:
    np.save(sys.argv[5], decompress(f.read()))
"""


def test_bit_exact_across_processes_and_threads(model, tmp_path):
    img = smooth_image(40, 56, seed=21)
    ref = compress(img, model)  # this process, one thread
    (tmp_path / "ref.vqc").write_bytes(ref)
    np.save(tmp_path / "img.npy", img)
    (tmp_path / "worker.py").write_text(_WORKER)
    procs = {
        threads: subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(threads), str(tmp_path / "img.npy"),
             str(tmp_path / f"t{threads}.vqc"), str(tmp_path / "ref.vqc"), str(tmp_path / f"t{threads}.npy")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for threads in (2, 1)
    }
    for threads, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{threads} threads: {err.decode()}"
    two, one = (tmp_path / "t2.vqc").read_bytes(), (tmp_path / "t1.vqc").read_bytes()
    assert two == one, "compressing with 1 and 2 threads gave different bytes"
    assert two == ref
    expected = decompress(ref, model)
    np.testing.assert_array_equal(np.load(tmp_path / "t1.npy"), expected)  # 1 thread decodes 2 threads' file
    np.testing.assert_array_equal(np.load(tmp_path / "t2.npy"), expected)


# -- 4. batch independence ------------------------------------------------------------------------------


def test_batched_tiles_decode_like_single_tiles(model):
    m = dataclasses.replace(model, tile=4)
    codes = image_codes(m, smooth_image(40, 56, seed=31))
    shapes = code_shapes(codes)
    tiles = tile_grid(shapes[0][0], shapes[0][1], m.tile)
    assert len(tiles) == 12 and sum((t.height, t.width) == (4, 4) for t in tiles) == 6  # 4 shape groups
    payloads = encode_codes(m, codes)
    batched = decode_codes(m, shapes, payloads)
    assert_codes_equal(batched, codes)
    for tile, payload in zip(tiles, payloads):
        own = [c[:, tile.window(lv)[0], tile.window(lv)[1]] for lv, c in enumerate(codes)]
        assert encode_codes(m, own) == [payload]  # the encoder does not depend on the batch either
        single = decode_codes(m, code_shapes(own), [payload])
        assert_codes_equal(single, own)
        assert_codes_equal([b[:, tile.window(lv)[0], tile.window(lv)[1]] for lv, b in enumerate(batched)], single)


def test_parallel_probs_equal_stepper_probs(model):
    # two images as a batch of two, so the stepper's batch rows must not mix either
    maps = [image_codes(model, smooth_image(40, 48, seed=s)) for s in (41, 42)]
    codes = [torch.cat([mp[lv] for mp in maps]) for lv in range(model.levels)]
    for level in reversed(range(model.levels)):
        net = model.priors[level]
        here, cond = codes[level], codes[level + 1 :] or None
        parallel = net.parallel_probs(here, cond)
        b, h, w = here.shape
        stepper = Stepper(net, b, h, w, cond)
        for r in range(h):
            stepper.row(r)
            for c in range(w):
                step = stepper.probs_at(r, c)
                assert torch.equal(step, parallel[:, r, c]), f"level {level} differs at ({r}, {c})"
                stepper.put(r, c, here[:, r, c])
        assert parallel.dtype == torch.float64 and torch.equal(parallel, parallel.round())
        assert float(parallel.min()) >= 1


# -- 5. coded size against the model's cross-entropy -----------------------------------------------------


@pytest.mark.parametrize("tile", [32, 8])
def test_coded_size_is_close_to_cross_entropy(model, tile):
    m = dataclasses.replace(model, tile=tile)
    codes = image_codes(m, smooth_image(64, 96, seed=51))
    bits, ce, n_tiles = coded_bits_and_cross_entropy(m, codes)
    assert bits <= 1.005 * ce + 64 * n_tiles, f"{bits} payload bits for {ce:.1f} bits of cross-entropy"
    assert bits >= 0.98 * ce  # a coder cannot beat its model by much: guards the measurement itself


def test_coded_size_three_levels(model3):
    codes = image_codes(model3, smooth_image(48, 64, seed=52))
    bits, ce, n_tiles = coded_bits_and_cross_entropy(dataclasses.replace(model3, tile=8), codes)
    assert 0.98 * ce <= bits <= 1.005 * ce + 64 * n_tiles


# -- 6. fuzzing whole files -------------------------------------------------------------------------------


def test_fuzzed_files_only_raise_vqcodec_error(model):
    model4 = dataclasses.replace(model, tile=4)
    seeds = [
        (model, compress(smooth_image(16, 16, seed=61), model)),  # one tile
        (model4, compress(smooth_image(24, 32, seed=62), model4)),  # four tiles in two shapes
    ]
    rng = random.Random(1234)
    outcomes: dict[str, list[int]] = {}
    for n in range(500):
        m, data = seeds[n % 2]
        kind, mutated = mutate(rng, data, header_end(data))
        start = time.perf_counter()
        try:
            with deadline(30):
                out = decompress(mutated, m)
            assert isinstance(out, np.ndarray) and out.dtype in (np.uint8, np.uint16)
            ok = 1
        except VQCodecError:
            ok = 0
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation {n} ({kind}) raised {type(err).__name__}: {err}\nfile: {mutated.hex()}")
        assert time.perf_counter() - start < 30
        outcomes.setdefault(kind, []).append(ok)
    # the mix really reached the codec: some damaged files were refused, some decoded to something
    assert sum(map(sum, outcomes.values())) > 0
    # the header CRC32 and the per-tile CRC-16s catch 1-3 flipped bits anywhere, and truncation always
    assert all(not any(outcomes[k]) for k in ("flip", "truncate") if k in outcomes)
    assert len(outcomes) == 9


# -- 7. golden file ---------------------------------------------------------------------------------------


def golden_image() -> np.ndarray:
    """A 48x40 (width x height) RGB pattern from integer arithmetic only: gradients, stripes and a disc."""
    y, x = np.mgrid[0:40, 0:48]
    r = x * 255 // 47
    g = y * 255 // 39
    b = ((x + 2 * y) * 9) % 256
    disc = (x - 30) ** 2 + (y - 15) ** 2 < 81
    r, g, b = np.where(disc, 230, r), np.where(disc, 40, g), np.where(disc, 60, b)
    return np.stack([r, g, b], -1).astype(np.uint8)


def write_golden_files(folder: Path = DATA) -> None:
    """Regenerate the golden files (see the module docstring); not called by the tests."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(golden_image()).save(folder / "golden.png")
    data = compress(folder / "golden.png")
    (folder / "golden.vqc").write_bytes(data)
    digest = hashlib.sha256(decompress(data).tobytes()).hexdigest()
    (folder / "golden.sha256").write_text(digest + "\n")


def test_golden_file(model):
    png, vqc = DATA / "golden.png", DATA / "golden.vqc"
    with Image.open(png) as im:
        np.testing.assert_array_equal(np.asarray(im), golden_image())  # the PNG is what golden_image() makes
    data = vqc.read_bytes()
    head = unpack(data).header
    assert (head.width, head.height, head.channels, head.bit_depth) == (48, 40, 3, 8)
    assert head.model_fingerprint == model.fingerprint, "the default model changed: regenerate the golden files"
    pixels = decompress(data, model)
    assert pixels.shape == (40, 48, 3) and pixels.dtype == np.uint8
    # the code maps must decode exactly (integer prior + range coder: platform-independent) ...
    stream = unpack(data)
    codes = decode_codes(model, model.vqvae.code_shapes(40, 48), list(stream.tiles))
    assert_codes_equal(codes, image_codes(model, golden_image()))
    # ... and the pixels must be the ones recorded (this also pins the float VQ-VAE decoder's output)
    want = (DATA / "golden.sha256").read_text().split()[0]
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == want, (
        "golden.vqc decodes to different pixels than recorded although its codes decode exactly: the "
        "VQ-VAE decoder's float arithmetic differs here (torch version / CPU), or the model changed"
    )
    assert compress(png, model) == data, "re-encoding golden.png no longer gives golden.vqc"
    assert compress(golden_image(), model) == data


# -- 8. model mismatch ------------------------------------------------------------------------------------


def test_other_models_file_is_refused(model):
    data = compress(smooth_image(16, 16, seed=81), model)
    stream = unpack(data)
    other = bytes(b ^ 0xFF for b in stream.header.model_fingerprint)
    forged = pack(Bitstream(dataclasses.replace(stream.header, model_fingerprint=other), stream.tiles))
    assert unpack(forged).header.model_fingerprint == other  # it parses: only the model check is left
    with pytest.raises(VQCodecError, match="model") as err:
        decompress(forged, model)
    assert other.hex() in str(err.value) and model.fingerprint.hex() in str(err.value)
    # the same forgery done on the raw bytes, the header CRC recomputed by hand
    raw = bytearray(data)
    raw[6:22] = other
    assert with_header_crc(raw, header_end(data)) == forged


def test_missing_model_file(tmp_path, model):
    data = compress(smooth_image(8, 8, seed=82), model)
    with pytest.raises(VQCodecError, match="not found"):
        decompress(data, tmp_path / "missing.safetensors")
    with pytest.raises(VQCodecError, match="not found"):
        compress(smooth_image(8, 8, seed=82), str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(VQCodecError):
        decompress(data, tmp_path / "junk.safetensors")


# -- 9. command line ---------------------------------------------------------------------------------------


CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: much faster for these small images


def cli(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vqcodec", *args], cwd=cwd, input=stdin, capture_output=True,
                          timeout=120, env=CLI_ENV)


def cli_parallel(runs: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run several CLI commands at once (each single-threaded) and collect their results by name."""
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "vqcodec", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=CLI_ENV)
        for name, args in runs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def assert_clean_failure(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqcodec: error: "), err
    return lines[0]


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def test_cli_files_and_pipes(model, tmp_path):
    img = smooth_image(24, 40, seed=91)
    Image.fromarray(img).save(tmp_path / "in.png")
    proc = cli("compress", "in.png", "-o", "out.vqc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    data = (tmp_path / "out.vqc").read_bytes()
    assert data == compress(tmp_path / "in.png", model)
    proc = cli("decompress", "out.vqc", "-o", "back.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    back = (tmp_path / "back.png").read_bytes()
    expected = decompress(data, model)
    np.testing.assert_array_equal(png_pixels(back), expected)

    # stdin -> stdout, both ends piped together
    env = CLI_ENV
    with open(tmp_path / "in.png", "rb") as src:
        enc = subprocess.Popen([sys.executable, "-m", "vqcodec", "compress", "-", "-o", "-"], cwd=tmp_path,
                               stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        dec = subprocess.Popen([sys.executable, "-m", "vqcodec", "decompress", "-", "-o", "-"], cwd=tmp_path,
                               stdin=enc.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        enc.stdout.close()
        piped, dec_err = dec.communicate(timeout=120)
        _, enc_err = enc.communicate(timeout=120)
    assert enc.returncode == 0 and dec.returncode == 0, (enc_err + dec_err).decode()
    assert piped[:8] == b"\x89PNG\r\n\x1a\n"
    assert piped == back
    np.testing.assert_array_equal(png_pixels(piped), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.png", "in.png", "out.vqc"]  # nothing like '-.vqc'

    proc = cli("info", "out.vqc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    assert re.search(r"size: 40 x 24\b", text), text
    assert re.search(rf"bytes: {len(data)}\b", text), text
    assert model.fingerprint.hex() in text


def test_cli_refusals(model, tmp_path):
    Image.fromarray(smooth_image(16, 24, seed=92)).save(tmp_path / "in.png")
    data = compress(tmp_path / "in.png", model)
    (tmp_path / "out.vqc").write_bytes(b"keep me")
    (tmp_path / "cut.vqc").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.vqc").write_bytes(bytes(random.Random(5).randrange(256) for _ in range(300)))
    (tmp_path / "noise.png").write_bytes(bytes(random.Random(6).randrange(256) for _ in range(300)))
    (tmp_path / "good.vqc").write_bytes(data)
    runs = {
        "exists": ["compress", "in.png", "-o", "out.vqc"],
        "truncated": ["decompress", "cut.vqc", "-o", "cut.png"],
        "noise_vqc": ["decompress", "noise.vqc", "-o", "noise_out.png"],
        "noise_png": ["compress", "noise.png", "-o", "noise_out.vqc"],
        "no_model": ["decompress", "good.vqc", "-o", "good.png", "--model", "missing.safetensors"],
    }
    results = cli_parallel(runs, cwd=tmp_path)
    assert "exists" in assert_clean_failure(results["exists"])
    assert (tmp_path / "out.vqc").read_bytes() == b"keep me"
    assert "truncated" in assert_clean_failure(results["truncated"])
    assert_clean_failure(results["noise_vqc"])
    assert_clean_failure(results["noise_png"])
    assert "missing.safetensors" in assert_clean_failure(results["no_model"])
    leftovers = {"cut.png", "noise_out.png", "noise_out.vqc", "good.png"} & {p.name for p in tmp_path.iterdir()}
    assert not leftovers
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_folder(model, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(8 + 4 * i, 12, seed=93 + i)).save(src / f"p{i}.png")
    proc = cli("compress", "photos", "--out", "packed", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    files = sorted((tmp_path / "packed").iterdir())
    assert [f.name for f in files] == ["p0.vqc", "p1.vqc", "p2.vqc"]
    for f in files:
        assert f.read_bytes() == compress(src / f"{f.stem}.png", model)


# -- 10. Python API ------------------------------------------------------------------------------------------


def test_python_api_inputs(model, tmp_path):
    img = smooth_image(12, 20, seed=101)
    Image.fromarray(img).save(tmp_path / "a.png")
    by_array = vqcodec.compress(img)  # the default model, loaded by the library itself
    assert vqcodec.compress(tmp_path / "a.png") == by_array
    assert vqcodec.compress(str(tmp_path / "a.png")) == by_array
    assert vqcodec.compress((tmp_path / "a.png").read_bytes()) == by_array
    assert vqcodec.compress(Image.fromarray(img)) == by_array
    assert vqcodec.compress(np.asfortranarray(img)) == by_array  # layout does not matter
    out = vqcodec.decompress(by_array)
    assert isinstance(out, np.ndarray) and out.shape == img.shape and out.dtype == np.uint8
    gray = Image.fromarray(img[..., 0])
    gray_out = vqcodec.decompress(vqcodec.compress(gray))
    assert gray_out.shape == (12, 20) and gray_out.dtype == np.uint8
    assert vqcodec.compress(img[..., 0]) == vqcodec.compress(gray)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32, np.int64, np.bool_, np.uint32])
def test_non_uint_arrays_are_refused(model, dtype):
    with pytest.raises(VQCodecError, match="uint8 or uint16"):
        vqcodec.compress(np.zeros((8, 8, 3), dtype=dtype), model)


def test_bad_array_shapes_and_objects_are_refused(model):
    for bad in (np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8), np.uint8),
                np.zeros(8, np.uint8), np.zeros((2, 8, 8, 3), np.uint8)):
        with pytest.raises(VQCodecError):
            vqcodec.compress(bad, model)
    with pytest.raises(VQCodecError):
        vqcodec.compress(12345, model)


def test_bits_per_pixel_is_plausible(model):
    """A loose sanity bound: a smooth 64x96 image costs far less than 1 bpp and more than nothing."""
    img = smooth_image(64, 96, seed=111)
    data = compress(img, model)
    bpp = 8 * len(data) / (64 * 96)
    assert 0.01 < bpp < 1.0


def test_tile_size_is_chosen_at_compress_time_and_read_from_the_header(model):
    pixels = smooth_image(40, 56, seed=71)
    default = compress(pixels, model)
    small = compress(pixels, model, tile=8)
    assert unpack(small).header.tile_size == 8 and len(unpack(small).tiles) > len(unpack(default).tiles)
    assert np.array_equal(decompress(small, model), decompress(default, model))  # same codes, other grid
    with pytest.raises(VQCodecError, match="power of two"):
        compress(pixels, model, tile=12)


def test_invalid_range_coder_data_is_a_vqcodec_error():
    """constriction reports some invalid streams with an AssertionError (found by
    benchmarks/fuzz_codec.py); the decoder must turn every such failure into VQCodecError."""
    from vqcodec.entropy import TileDecoders

    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(200):
        probs = torch.from_numpy(rng.random((1, 512)) ** 8 * 2**20 + 1)
        words = rng.integers(0, 2**32, size=int(rng.integers(1, 4)), dtype=np.uint64).astype("<u4")
        decoders = TileDecoders([words.tobytes()])
        try:
            for _ in range(200):
                decoders.decode(probs)
        except VQCodecError:
            refused += 1
    assert refused > 0


def test_region_decodes_alone_and_matches_the_full_image(model, tmp_path):
    pixels = smooth_image(200, 264, seed=81)
    small = dataclasses.replace(model, tile=8)  # 8x8 codes per tile: many tiles, most of them skipped
    data = compress(pixels, small)
    full = decompress(data, small)
    x, y, w, h = 150, 120, 40, 30
    part = decompress(data, small, region=(x, y, w, h))
    assert part.shape == (h, w, 3)
    assert np.abs(part.astype(int) - full[y : y + h, x : x + w].astype(int)).max() <= 1
    with pytest.raises(VQCodecError, match="not inside"):
        decompress(data, small, region=(250, 0, 20, 10))
    src = tmp_path / "r.vqc"
    src.write_bytes(compress(pixels, model))
    proc = cli("decompress", str(src), "-o", str(tmp_path / "r.png"), "--region", "10,20,30,40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert png_pixels((tmp_path / "r.png").read_bytes()).shape == (40, 30, 3)
    assert cli("decompress", str(src), "-o", str(tmp_path / "q.png"), "--region", "a,b", cwd=tmp_path).returncode == 1


# -- 11. a damaged tile does not take the others with it ----------------------------------------------------


def damaged_file(model: CodecModel) -> tuple[CodecModel, np.ndarray, bytes, bytes, int]:
    """(model with 8-code tiles, pixels, intact file, the same file with tile 2's payload damaged, 2)."""
    m = dataclasses.replace(model, tile=8)
    pixels = smooth_image(64, 96, seed=121)  # 16x24 bottom codes: 6 tiles of 8x8
    data = compress(pixels, m)
    lengths = [len(t) for t in unpack(data).tiles]
    assert len(lengths) == 6 and all(lengths)
    k = 2
    at = len(data) - sum(lengths) + sum(lengths[:k]) + lengths[k] // 2  # the middle of tile 2's payload
    bad = bytearray(data)
    bad[at] ^= 0x10
    return m, pixels, data, bytes(bad), k


def test_damaged_tile_strict_and_salvage(model):
    m, pixels, data, bad, k = damaged_file(model)
    with pytest.raises(VQCodecError, match=rf"^payload of tile {k} is corrupted \(checksum mismatch\)\.$"):
        decompress(bad, m)
    with pytest.raises(VQCodecError, match=f"tile {k}"):
        unpack(bad)

    # the code maps: every other tile decodes exactly as from the intact file, tile 2 stays 0
    shapes = m.vqvae.code_shapes(64, 96)
    intact = decode_codes(m, shapes, list(unpack(data).tiles))
    assert_codes_equal(intact, image_codes(m, pixels))
    stream = unpack(bad, salvage=True)
    assert stream.damaged == (k,)
    rest = set(range(6)) - {k}
    salvaged = decode_codes(m, shapes, list(stream.tiles), only=rest)
    tiles = tile_grid(*shapes[0], m.tile)
    for i, t in enumerate(tiles):
        for lv in range(m.levels):
            want = intact[lv][0][t.window(lv)] if i != k else torch.zeros_like(intact[lv][0][t.window(lv)])
            assert torch.equal(salvaged[lv][0][t.window(lv)], want), f"tile {i}, level {lv}"

    # the pixels are those of exactly these code maps
    image = decompress_image(bad, m, salvage=True)
    assert image.damaged_tiles == (k,)
    expected = from_tensor(m.vqvae.decode(salvaged, 64, 96).clamp(0, 1), 8)
    np.testing.assert_array_equal(image.pixels, expected)
    with pytest.warns(VQCodecWarning, match=rf"^1 damaged tile\(s\) \({k}\) could not be restored$"):
        out = decompress(bad, m, salvage=True)
    np.testing.assert_array_equal(out, expected)
    with pytest.warns(VQCodecWarning):
        part = decompress(bad, m, region=(40, 8, 16, 12), salvage=True)
    assert part.shape == (12, 16, 3)

    # an intact file decodes the same with or without salvage, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = decompress_image(data, m, salvage=True)
    assert clean.damaged_tiles == ()
    np.testing.assert_array_equal(clean.pixels, decompress(data, m))


def test_cli_salvage(model, tmp_path):
    m, _, _, bad, k = damaged_file(model)
    (tmp_path / "bad.vqc").write_bytes(bad)
    runs = {"strict": ["decompress", "bad.vqc", "-o", "strict.png"],
            "salvage": ["decompress", "bad.vqc", "-o", "salvaged.png", "--salvage"]}
    results = cli_parallel(runs, cwd=tmp_path)
    assert f"payload of tile {k} is corrupted" in assert_clean_failure(results["strict"])
    assert not (tmp_path / "strict.png").exists()
    err = results["salvage"].stderr.decode()
    assert results["salvage"].returncode == 0, err
    assert err.strip().splitlines() == [f"vqcodec: warning: 1 damaged tile(s) ({k}) could not be restored"]
    np.testing.assert_array_equal(png_pixels((tmp_path / "salvaged.png").read_bytes()),
                                  decompress_image(bad, m, salvage=True).pixels)


def test_pil_images_with_transparency_are_refused_but_opaque_alpha_is_fine(model):
    rgba = Image.fromarray(np.dstack([smooth_image(16, 16, seed=91), np.full((16, 16), 255, np.uint8)]), "RGBA")
    assert decompress(compress(rgba, model), model).shape == (16, 16, 3)
    rgba.putpixel((3, 3), (1, 2, 3, 0))
    with pytest.raises(VQCodecError, match="alpha"):
        compress(rgba, model)
