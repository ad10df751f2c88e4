"""Tests for the Python API (``vqcodec.compress``, ``decompress``, ``decompress_image``): image round
trips with the default and a 3-level model, bit-exactness across processes and thread counts, the
inputs the API accepts and refuses, the tile size, regions, salvaging damaged tiles, fuzzing of whole
files and the golden file.

Golden files (tests/data/golden.png, golden_v5.vqc, golden_v4.vqc, golden_v3.vqc, golden_v2.vqc, golden.vqc,
golden.sha256) pin the format and the default model's coding: golden_v5.vqc is what compress writes (format
version 5: version 4 plus a checksum of each tile's codes), golden_v4.vqc what vqcodec 0.3-0.5 wrote (format
version 4: the VQ-VAE decodes in bands; the image, golden_image() seven times over, is tall enough for two; the
same payloads as golden_v5.vqc), golden_v3.vqc what vqcodec wrote before version 4 for an image coded at another
size (format version 3), golden_v2.vqc what it wrote otherwise (format version 2), golden.vqc the same image as
format version 1 wrote it (symbols in raster order); all must keep decoding to the same pixels, and the files of
earlier versions are never rewritten (users hold such files). When the model or the format changes on purpose,
write the file of the version compress writes from the repository root with

    .venv/bin/python -m pytest tests/test_codec.py -k golden --regen-golden

which compresses golden_source() with GOLDEN_MODEL, writes the file of FORMAT_VERSION and its line of
golden.sha256 (the SHA-256 of its decoded pixel bytes, decompress(...).tobytes()), writes an older version's
file (as its version holds it: the same codes and payloads under the older header; at scale 0.75 for version 3)
and golden.png only where they are missing, then checks every file as usual; review and commit them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqcodec
from vqcodec.codec import compress, decompress, decompress_image, reconstruction_windows
from vqcodec.coding.bitstream import FORMAT_VERSION, Bitstream, pack, unpack
from vqcodec.coding.tile_codec import decode_tiles, encode_tiles, tile_code_checksums
from vqcodec.coding.tiles import tile_grid
from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.imageio import from_tensor
from vqcodec.resample import coded_size
from vqcodec.testing import (
    assert_codes_equal,
    file_with_damaged_tile,
    header_end,
    image_codes,
    mutate,
    smooth_image,
    tiny_codec_model,
    with_header_crc,
)
from vqcodec.zoo.codec_model import CodecModel, load_codec_model

DATA = Path(__file__).resolve().parent / "data"


# -- helpers ----------------------------------------------------------------------------------------------


def reference_pixels(m: CodecModel, pixels: np.ndarray) -> np.ndarray:
    """What decompress(compress(pixels)) must give when the codes survive coding exactly."""
    bits = 8 if pixels.dtype == np.uint8 else 16
    recon = m.vqvae.decode(image_codes(m, pixels), pixels.shape[0], pixels.shape[1]).clamp(0, 1)
    if pixels.ndim == 2:
        recon = recon.mean(1, keepdim=True)
    out = from_tensor(recon, bits)
    return out[..., 0] if pixels.ndim == 2 else out


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


# -- 1. image round trips with the default model -------------------------------------------------------


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


@pytest.mark.slow
def test_bit_exact_across_processes_and_threads(model, tmp_path):
    img = smooth_image(264, 56, seed=21)  # two bands of the VQ-VAE decoder (format 4): side by side on 2 threads
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


# -- 4. fuzzing whole files -------------------------------------------------------------------------------


@pytest.mark.slow
def test_fuzzed_files_only_raise_vqcodec_error(model):
    seeds = [
        compress(smooth_image(16, 16, seed=61), model),  # one tile
        compress(smooth_image(24, 32, seed=62), model, tile=4),  # four tiles in two shapes
    ]
    rng = random.Random(1234)
    outcomes: dict[str, list[int]] = {}
    for n in range(500):
        data = seeds[n % 2]
        kind, mutated = mutate(rng, data, header_end(data))
        start = time.perf_counter()
        try:
            with deadline(30):
                out = decompress(mutated, model)
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
    # the header CRC32 and the per-tile CRC-16s catch 1-3 flipped bits anywhere, and truncation always;
    # a header that claims a huge image is refused (over the size limit, or payloads too short)
    assert all(not any(outcomes[k]) for k in ("flip", "truncate", "huge") if k in outcomes)
    assert len(outcomes) == 11


# -- 5. golden file ---------------------------------------------------------------------------------------


def golden_image() -> np.ndarray:
    """A 48x40 (width x height) RGB pattern from integer arithmetic only: gradients, stripes and a disc."""
    y, x = np.mgrid[0:40, 0:48]
    r = x * 255 // 47
    g = y * 255 // 39
    b = ((x + 2 * y) * 9) % 256
    disc = (x - 30) ** 2 + (y - 15) ** 2 < 81
    r, g, b = np.where(disc, 230, r), np.where(disc, 40, g), np.where(disc, 60, b)
    return np.stack([r, g, b], -1).astype(np.uint8)


GOLDEN = {1: "golden.vqc", 2: "golden_v2.vqc", 3: "golden_v3.vqc", 4: "golden_v4.vqc",
          5: "golden_v5.vqc"}  # every format version
GOLDEN_MODEL = "paper"  # the first shipped model: the files it wrote must decode forever
GOLDEN_SCALE = {3: 0.75}  # version 3: the image coded at three quarters of its size


def golden_source(version: int) -> np.ndarray:
    """The image of a version's golden file: from version 4 golden_image() seven times over (48x280,
    two bands of the VQ-VAE decoder), before it golden_image() itself."""
    return np.tile(golden_image(), (7, 1, 1)) if version >= 4 else golden_image()


def as_version(data: bytes, version: int) -> bytes:
    """A file with the same codes and payloads as ``data`` under a header of an older ``version``:
    what vqcodec wrote before version 5 (the bytes differ in the version byte and the header CRC, and
    from version 5 to 4 the code checksum table, which pack leaves out before version 5)."""
    stream = unpack(data)
    return pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, version=version)))


def golden_digests() -> dict[str, str]:
    """File name -> SHA-256 of its decoded pixel bytes, from golden.sha256 (sha256sum's format)."""
    lines = (DATA / "golden.sha256").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def version_1(model, pixels: np.ndarray) -> bytes:
    """What vqcodec wrote before format version 2: the same container, symbols in raster order."""
    stream = unpack(compress(pixels, model))
    head = dataclasses.replace(stream.header, version=1)
    payloads = encode_tiles(model.priors, image_codes(model, pixels), head.tile_size, "raster")
    return pack(Bitstream(head, tuple(payloads)))


def write_golden_files(folder: Path = DATA) -> None:
    """Write the golden file of the version compress writes, and those missing (see the module
    docstring): run by ``pytest --regen-golden``. A golden file of an earlier version, and its line in
    golden.sha256, is never rewritten: it pins what an earlier vqcodec wrote, which must decode forever."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "golden.png").exists():
        Image.fromarray(golden_image()).save(folder / "golden.png")
    model = load_codec_model(GOLDEN_MODEL)
    digests = golden_digests() if (folder / "golden.sha256").exists() else {}
    for version, name in GOLDEN.items():
        if (folder / name).exists() and version != FORMAT_VERSION:
            continue
        if version == 1:
            data = version_1(model, golden_image())
        else:
            data = compress(golden_source(version), model, scale=GOLDEN_SCALE.get(version, 1.0))
            data = as_version(data, version) if version != FORMAT_VERSION else data
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha256(decompress(folder / name).tobytes()).hexdigest()
    lines = [f"{digests[name]}  {name}" for name in GOLDEN.values()]
    (folder / "golden.sha256").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("version", sorted(GOLDEN))
def test_golden_file(regen_golden, version):
    if regen_golden and version == min(GOLDEN):
        write_golden_files()
    model = load_codec_model(GOLDEN_MODEL)
    png, vqc = DATA / "golden.png", DATA / GOLDEN[version]
    with Image.open(png) as im:
        np.testing.assert_array_equal(np.asarray(im), golden_image())  # the PNG is what golden_image() makes
    data = vqc.read_bytes()
    head = unpack(data).header
    source = golden_source(version)
    assert (head.width, head.height, head.channels, head.bit_depth, head.version) == (48, len(source), 3, 8, version)
    assert head.model_fingerprint == model.fingerprint, f"the {GOLDEN_MODEL} model changed: it must not (its files)"
    pixels = decompress(data, model)
    assert pixels.shape == source.shape and pixels.dtype == np.uint8
    # the code maps must decode exactly (integer prior + range coder: platform-independent) ...
    stream = unpack(data)
    size = (head.coded_width, head.coded_height)
    assert size == coded_size(48, len(source), GOLDEN_SCALE.get(version, 1.0))
    codes = decode_tiles(model.priors, model.vqvae.code_shapes(size[1], size[0]), list(stream.tiles),
                         head.tile_size, order=head.symbol_order)
    assert_codes_equal(codes, image_codes(model, source, size))
    # ... and the pixels must be the ones recorded (this also pins the float VQ-VAE decoder's output)
    want = golden_digests()[vqc.name]
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == want, (
        f"{vqc.name} decodes to different pixels than recorded although its codes decode exactly: the "
        "VQ-VAE decoder's float arithmetic differs here (torch version / CPU), or the model changed"
    )
    if version == FORMAT_VERSION:
        assert len(reconstruction_windows(model, head)) == 2  # the bands this file pins
        assert compress(source, model) == data, f"encoding golden_source({version}) no longer gives {vqc.name}"
        # the code checksums it records are those of the codes it decodes to
        assert stream.code_checksums == tuple(tile_code_checksums(codes, head.tile_size).values())
    elif version >= 4:  # the same codes and payloads as the file of FORMAT_VERSION, under the older header
        assert len(reconstruction_windows(model, head)) == 2
        assert as_version(compress(source, model), version) == data, (
            f"encoding golden_source({version}) no longer gives {vqc.name}'s codes")
    elif version > 1:
        scale = GOLDEN_SCALE.get(version, 1.0)
        assert as_version(compress(png, model, scale=scale), version) == data, (
            f"re-encoding golden.png no longer gives {vqc.name}'s codes")
    else:
        assert version_1(model, golden_image()) == data, f"the version-{version} layout of the codes changed"


# -- 6. Python API inputs ------------------------------------------------------------------------------------


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


def test_pil_images_with_transparency_are_refused_but_opaque_alpha_is_fine(model):
    rgba = Image.fromarray(np.dstack([smooth_image(16, 16, seed=91), np.full((16, 16), 255, np.uint8)]), "RGBA")
    assert decompress(compress(rgba, model), model).shape == (16, 16, 3)
    rgba.putpixel((3, 3), (1, 2, 3, 0))
    with pytest.raises(VQCodecError, match="alpha"):
        compress(rgba, model)


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


# -- 7. regions -------------------------------------------------------------------------------------------------


def tiles_within_reach(head, region: tuple[int, int, int, int], reach: int = 64) -> set[int]:
    """The tiles a region needs, worked out here from the docs' words alone ("a region decodes only the
    tiles under it, and the decoder's reach around it", docs/cli.md; 64 pixels): every tile whose
    pixels (4 a bottom code) meet the region grown by ``reach`` pixels on every side."""
    x, y, w, h = region
    side = 4 * head.tile_size
    rows, cols = -(-head.height // side), -(-head.width // side)  # (these sizes need no padding to the stride)
    return {r * cols + c for r in range(rows) for c in range(cols)
            if r * side < y + h + reach and (r + 1) * side > y - reach
            and c * side < x + w + reach and (c + 1) * side > x - reach}


@pytest.mark.slow
def test_region_decodes_alone_and_matches_the_full_image(model):
    """A region is exactly the full decode's crop, and it decodes alone: from a file whose every other
    tile is noise (payloads of random bytes, the container's checksums made right again), it is still
    exactly the crop of the intact file's full decode, so no byte of those tiles was read."""
    pixels = smooth_image(200, 264, seed=81)
    data = compress(pixels, model, tile=8)  # 8x8 codes per tile: 7 x 9 tiles of 32 pixels, most of them skipped
    full = decompress(data, model)
    stream = unpack(data)
    rng = np.random.default_rng(5)
    for x, y, w, h in [(150, 120, 40, 30), (0, 0, 17, 9), (230, 150, 34, 50)]:
        part = decompress(data, model, region=(x, y, w, h))
        assert part.shape == (h, w, 3)
        np.testing.assert_array_equal(part, full[y : y + h, x : x + w])
        needed = tiles_within_reach(stream.header, (x, y, w, h))
        assert 0 < len(needed) < len(stream.tiles) - 20
        noise = tuple(t if k in needed else rng.integers(0, 256, len(t), dtype=np.uint8).tobytes()
                      for k, t in enumerate(stream.tiles))
        alone = pack(dataclasses.replace(stream, tiles=noise))
        np.testing.assert_array_equal(decompress(alone, model, region=(x, y, w, h)), full[y : y + h, x : x + w])
    with pytest.raises(VQCodecError):  # the noise is real: the whole image cannot be decoded from that file
        decompress(alone, model)
    with pytest.raises(VQCodecError, match="not inside"):
        decompress(data, model, region=(250, 0, 20, 10))


def test_a_region_decodes_only_the_tiles_under_it_and_the_decoders_reach(model, monkeypatch):
    """The tile decoder, spied on, decodes exactly the tiles within the decoder's reach (64 pixels) of
    the region, each once, and a full decode every tile once: a region far from the others' tiles
    touches none of them."""
    from vqcodec.coding import tile_codec

    decoded: list[int] = []
    real = tile_codec._decode_batch

    def spy(job, idx):
        decoded.extend(idx)
        return real(job, idx)

    monkeypatch.setattr(tile_codec, "_decode_batch", spy)
    data = compress(smooth_image(200, 264, seed=83), model, tile=8)  # 7 x 9 tiles of 32x32 pixels
    head = unpack(data).header
    full = decompress(data, model)
    assert sorted(decoded) == list(range(63))  # the spy sees every tile of a full decode (in this process)
    for region in [(128, 96, 32, 32), (0, 0, 8, 8), (232, 168, 32, 32), (150, 120, 40, 30), (3, 70, 250, 1),
                   (100, 0, 1, 200)]:
        decoded.clear()
        x, y, w, h = region
        np.testing.assert_array_equal(decompress(data, model, region=region), full[y : y + h, x : x + w])
        assert sorted(decoded) == sorted(tiles_within_reach(head, region)), region
    decoded.clear()
    decompress(data, model, region=(128, 96, 32, 32))
    assert sorted(decoded) == [r * 9 + c for r in range(1, 6) for c in range(2, 7)]  # the tile and two around it


# -- 8. a damaged tile does not take the others with it ----------------------------------------------------


@pytest.mark.slow
def test_damaged_tile_strict_and_salvage(model):
    pixels, data, bad, tile, k = file_with_damaged_tile(model)
    with pytest.raises(VQCodecError, match=rf"^payload of tile {k} is corrupted \(checksum mismatch\)\.$"):
        decompress(bad, model)
    with pytest.raises(VQCodecError, match=f"tile {k}"):
        unpack(bad)

    # the code maps: every other tile decodes exactly as from the intact file, tile 2 stays 0
    shapes = model.vqvae.code_shapes(64, 96)
    intact = decode_tiles(model.priors, shapes, list(unpack(data).tiles), tile)
    assert_codes_equal(intact, image_codes(model, pixels))
    stream = unpack(bad, salvage=True)
    assert stream.damaged == (k,)
    rest = set(range(6)) - {k}
    salvaged = decode_tiles(model.priors, shapes, list(stream.tiles), tile, only=rest)
    tiles = tile_grid(*shapes[0], tile)
    for i, t in enumerate(tiles):
        for lv in range(model.levels):
            want = intact[lv][0][t.window(lv)] if i != k else torch.zeros_like(intact[lv][0][t.window(lv)])
            assert torch.equal(salvaged[lv][0][t.window(lv)], want), f"tile {i}, level {lv}"

    # the pixels are those of exactly these code maps
    image = decompress_image(bad, model, salvage=True)
    assert image.damaged_tiles == (k,)
    expected = from_tensor(model.vqvae.decode(salvaged, 64, 96).clamp(0, 1), 8)
    np.testing.assert_array_equal(image.pixels, expected)
    with pytest.warns(VQCodecWarning, match=rf"^1 damaged tile\(s\) \({k}\) could not be restored$"):
        out = decompress(bad, model, salvage=True)
    np.testing.assert_array_equal(out, expected)
    with pytest.warns(VQCodecWarning):
        part = decompress(bad, model, region=(40, 8, 16, 12), salvage=True)
    assert part.shape == (12, 16, 3)

    # an intact file decodes the same with or without salvage, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = decompress_image(data, model, salvage=True)
    assert clean.damaged_tiles == ()
    np.testing.assert_array_equal(clean.pixels, decompress(data, model))


# -- 8b. codes that fail their checksum (format version 5) -----------------------------------------------------
# A file's payloads can be intact (their CRC-16s right) and still decode to other codes than were coded: under a
# model other than the writer's, or under one probability that differs. Version 5 records a checksum of each
# tile's codes, and the decoder checks the codes it decoded against it.


def cli_decompress(*args: str):
    """``vqcodec decompress`` in this process (click's CliRunner): (exit code, stderr lines)."""
    from click.testing import CliRunner
    from vqcodec_cli.main import main as cli_main

    res = CliRunner().invoke(cli_main, ["decompress", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    return res.exit_code, res.stderr.strip().splitlines()


@pytest.mark.slow
def test_a_file_given_another_models_fingerprint_is_refused_not_decoded_into_noise(tmp_path):
    """The issue's report: a paper-wf file whose fingerprint was swapped for paper-up-b3's (another installed
    model with other priors; the header CRC fixed) decoded with exit 0 to noise. Now every tile's codes fail
    their checksum: an error (exit 1, one line, no output file), with or without --salvage."""
    writer, other = load_codec_model("paper-wf"), load_codec_model("paper-up-b3")
    assert writer.fingerprint != other.fingerprint and (writer.levels, writer.tile) == (other.levels, other.tile)
    data = compress(smooth_image(64, 96, seed=121), writer, tile=8)  # 6 tiles
    forged = bytearray(data)
    forged[6:22] = other.fingerprint
    forged = with_header_crc(forged, header_end(data))
    assert unpack(forged).tiles == unpack(data).tiles  # a valid container: only the codes can tell
    message = (r"all 6 tiles decoded to codes that fail their checksums: the file was not written by the priors of "
               r"model 'paper-up-b3', or it is damaged$")
    with pytest.raises(VQCodecError, match="^" + message):
        decompress(forged)  # the model is found by the fingerprint
    with pytest.raises(VQCodecError, match="^nothing can be restored: " + message):
        decompress(forged, salvage=True)
    # what version 4 could not tell: the same forgery decodes, to noise
    noise = decompress(as_version(forged, 4))
    right = decompress(data)
    assert np.mean((noise.astype(float) - right) ** 2) > 10 * np.mean((right.astype(float) - smooth_image(
        64, 96, seed=121)) ** 2)
    (tmp_path / "forged.vqc").write_bytes(forged)
    for salvage in ((), ("--salvage",)):
        code, lines = cli_decompress(str(tmp_path / "forged.vqc"), "-o", str(tmp_path / "out.png"), *salvage)
        assert code == 1 and len(lines) == 1 and lines[0].startswith("vqcodec: error: "), lines
        assert "decoded to codes that fail their checksums" in lines[0]
        assert not (tmp_path / "out.png").exists()


def off_by_one(payload: bytes, step: int, entry: int | str, delta: int) -> type:
    """A stand-in for tile_codec.TileDecoders: the decoder of the tile whose payload is ``payload`` reads its
    ``step``-th step with entry ``entry`` ("max": the likeliest code) of its first position's probabilities
    changed by ``delta`` (units of the integer priors' probabilities, which sum to about 2**28 here)."""
    from vqcodec.coding.range_coder import TileDecoders

    class OffByOne(TileDecoders):
        def __init__(self, payloads: list[bytes]) -> None:
            super().__init__(payloads)
            self.row = payloads.index(payload) if payload in payloads else None
            self.steps = 0

        def decode(self, probs: torch.Tensor, inside: np.ndarray | None = None) -> torch.Tensor:
            self.steps += 1
            if self.row is not None and self.steps == step:
                probs = probs.clone()
                row = probs[self.row, 0]
                row[int(row.argmax()) if entry == "max" else entry] += delta
            return super().decode(probs, inside)

    return OffByOne


@pytest.mark.slow
def test_a_probability_off_by_one_is_detected_or_harmless(model, monkeypatch):
    """One probability of one code of tile 2 changed by one unit while decoding: either the range coder's
    24-bit quantization absorbs it (the same codes, the same pixels), or the codes differ and the tile fails
    its checksum; never other pixels. --salvage drops such a tile exactly as a damaged one."""
    from vqcodec.coding import tile_codec

    pixels, data, bad, _, k = file_with_damaged_tile(model)  # 6 tiles; tile k damaged in ``bad``
    want = decompress(data, model)
    as_damaged = decompress_image(bad, model, salvage=True)  # tile k's payload damaged: not decoded
    assert as_damaged.damaged_tiles == (k,)
    payload = unpack(data).tiles[k]
    detected = 0
    for step, entry, delta in [(5, 0, 1), (1, "max", -1), (20, 0, 1), (40, "max", -1)]:
        monkeypatch.setattr(tile_codec, "TileDecoders", off_by_one(payload, step, entry, delta))
        try:
            got = decompress(data, model)
        except VQCodecError as err:
            assert str(err) == (f"tile {k} decoded to codes that fail their checksum: the file was not written by "
                                "the priors of model 'paper-wf', or it is damaged"), str(err)
            detected += 1
            image = decompress_image(data, model, salvage=True)
            assert image.damaged_tiles == (k,)
            np.testing.assert_array_equal(image.pixels, as_damaged.pixels)
            with pytest.warns(VQCodecWarning, match=rf"^1 damaged tile\(s\) \({k}\) could not be restored$"):
                decompress(data, model, salvage=True)
            assert not np.array_equal(decompress(as_version(data, 4), model), want)  # version 4: other pixels
        else:
            np.testing.assert_array_equal(got, want)
    assert detected >= 2


@pytest.mark.slow
def test_a_region_checks_the_tiles_it_decodes_and_salvage_writes_the_rest(model, tmp_path):
    """A file whose payloads are intact but whose code checksum of tile 7 (the right end) is not that of its
    codes (the header CRC fixed): a region away from tile 7 does not decode it and comes out exact; one over
    it, and the whole image, are refused; --salvage writes the image without tile 7 and names it."""
    data = compress(smooth_image(32, 256, seed=131), model, tile=8)  # one row of 8 tiles of 8x8 bottom codes
    stream = unpack(data)
    assert len(stream.tiles) == 8
    sums = list(stream.code_checksums)
    sums[7] ^= 0x0100
    bad = pack(dataclasses.replace(stream, code_checksums=tuple(sums)))
    left, right = (0, 0, 16, 16), (240, 8, 16, 16)
    np.testing.assert_array_equal(decompress(bad, model, region=left), decompress(data, model, region=left))
    refusal = r"^tile 7 decoded to codes that fail their checksum: the file was not written by the priors of model"
    for region in (right, None):
        with pytest.raises(VQCodecError, match=refusal):
            decompress(bad, model, region=region)
    part = decompress_image(bad, model, region=right, salvage=True)
    assert part.damaged_tiles == (7,) and part.pixels.shape == (16, 16, 3)
    whole = decompress_image(bad, model, salvage=True)
    assert whole.damaged_tiles == (7,)
    np.testing.assert_array_equal(whole.pixels[:, :200], decompress(data, model)[:, :200])  # far from tile 7
    (tmp_path / "bad.vqc").write_bytes(bad)
    code, lines = cli_decompress(str(tmp_path / "bad.vqc"), "-o", str(tmp_path / "strict.png"))
    assert code == 1 and len(lines) == 1 and "tile 7 decoded to codes that fail their checksum" in lines[0]
    assert not (tmp_path / "strict.png").exists()
    code, lines = cli_decompress(str(tmp_path / "bad.vqc"), "-o", str(tmp_path / "salvaged.png"), "--salvage")
    assert code == 0 and lines == [f"vqcodec: warning: {tmp_path / 'bad.vqc'}: 1 damaged tile(s) (7) could not be "
                                   "restored"]
    with Image.open(tmp_path / "salvaged.png") as im:
        np.testing.assert_array_equal(np.asarray(im), whole.pixels)


# -- 9. hostile files and callers (issue 12) ---------------------------------------------------------------
# New names are looked up inside the tests (codec_module.X), so each test fails on its own without them.


def test_crafted_huge_header_is_refused_before_allocating(model):
    """The audit's 7,206-byte file: checksums right, 32768x32768 pixels in 1024 tiles of 4 bytes (9,254 bytes
    as format version 5 writes it: a 2-byte code checksum a tile more)."""
    import resource

    from vqcodec.testing import huge_claim

    crafted = huge_claim(compress(smooth_image(16, 16, seed=61), model), 32768, 32768)
    assert len(crafted) == 7206 + 2 * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with deadline(20):
        with pytest.raises(VQCodecError, match=r"32768x32768 image .* over the limit of 178,956,970 pixels"):
            decompress(crafted, model)
        # a caller who raises the limit still cannot be made to decode it: its payloads are too short
        with pytest.raises(VQCodecError, match=r"payload of tile 0 is 4 bytes, too short for its codes"):
            decompress(crafted, model, max_pixels=1 << 30)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB: nothing was allocated


def test_decode_size_limit_is_the_encoders_and_can_be_raised(model):
    from vqcodec import codec as codec_module

    assert codec_module.default_max_pixels() == 2 * Image.MAX_IMAGE_PIXELS == 178_956_970
    data = compress(smooth_image(16, 24, seed=3), model)
    with pytest.raises(VQCodecError, match=r"24x16 image \(384 pixels\), over the limit of 383 pixels"):
        decompress(data, model, max_pixels=383)
    assert decompress(data, model, max_pixels=384).shape == (16, 24, 3)


def test_tile_payload_too_short_for_its_codes_is_refused(model):
    data = compress(smooth_image(24, 32, seed=62), model, tile=4)  # 2 x 2 tiles
    stream = unpack(data)
    tiles = list(stream.tiles)
    tiles[1] = b""  # checksums and lengths consistent: only the codec can tell
    bad = pack(dataclasses.replace(stream, tiles=tuple(tiles)))
    with pytest.raises(VQCodecError, match=r"^payload of tile 1 is 0 bytes, too short for its codes \(at least 4 "):
        decompress(bad, model)
    with pytest.warns(VQCodecWarning, match=r"\(1\) could not be restored"):
        assert decompress(bad, model, salvage=True).shape == (24, 32, 3)


def test_image_that_cannot_fit_in_memory_is_refused_up_front(model, monkeypatch):
    from vqcodec import codec as codec_module

    real = codec_module.available_memory()
    assert real is None or real > 0  # /proc/meminfo's MemAvailable on Linux
    pixels = smooth_image(64, 48, seed=4)
    data = compress(pixels, model)
    monkeypatch.setattr(codec_module, "available_memory", lambda: 300 << 20, raising=False)

    def no_work(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(codec_module, "encode_tiles", no_work)
    monkeypatch.setattr(codec_module, "decode_tiles", no_work)
    with pytest.raises(VQCodecError, match=r"^compressing a 48x64 image needs about \d+\.\d GiB of memory, but only "
                                           r"0\.3 GiB is available"):
        compress(pixels, model)
    with pytest.raises(VQCodecError, match=r"^decoding a 48x64 image needs about \d+\.\d GiB of memory"):
        decompress(data, model)


def test_decompress_takes_paths_and_files_and_refuses_other_objects_clearly(model, tmp_path):
    data = compress(smooth_image(12, 20, seed=5), model)
    path = tmp_path / "x.vqc"
    path.write_bytes(data)
    want = decompress(data, model)
    for given in (str(path), path, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(decompress(given, model), want)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(decompress(f, model), want)
    with open(path, "rb") as f:
        assert decompress_image(f, model).pixels.shape == (12, 20, 3)
    for bad, match in ((None, "not NoneType"), (12345, "not int"), (tmp_path / "missing.vqc", "no such file")):
        with pytest.raises(VQCodecError, match=match):
            decompress(bad, model)
    with open(path) as text, pytest.raises(VQCodecError, match="not a binary stream|cannot read"):
        decompress(text, model)
    for region in ((10, 10), (1, 2, 3, 4, 5), "1,2,3,4", (0.5, 0, 4, 4), (True, 0, 4, 4)):
        with pytest.raises(VQCodecError, match="region"):
            decompress(data, model, region=region)


def test_salvage_keeps_the_intact_tiles_of_a_file_missing_its_last_byte(model):
    pixels, data, _, _, _ = file_with_damaged_tile(model)  # six tiles
    with pytest.raises(VQCodecError, match="truncated"):
        decompress(data[:-1], model)
    cut = decompress_image(data[:-1], model, salvage=True)
    assert cut.damaged_tiles == (5,)
    stream = unpack(data)
    tiles = list(stream.tiles)
    tiles[5] = bytes(len(tiles[5]))  # the same tile damaged in place: the same pixels
    image = decompress_image(pack(dataclasses.replace(stream, tiles=tuple(tiles))), model, salvage=True)
    np.testing.assert_array_equal(cut.pixels, image.pixels)


def test_salvage_with_no_intact_tile_is_an_error(model):
    data = bytearray(compress(smooth_image(16, 16, seed=6), model))  # one tile
    data[-2] ^= 0x40
    with pytest.raises(VQCodecError, match="nothing can be restored: all 1 tiles are damaged"):
        decompress(bytes(data), model, salvage=True)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_region_is_exactly_the_crop_of_the_full_decode(model, threads, monkeypatch):
    torch.set_num_threads(threads)  # the conftest fixture puts it back
    noisy = smooth_image(160, 200, seed=9).astype(int) + np.random.default_rng(0).integers(-30, 30, (160, 200, 3))
    files = [compress(np.clip(noisy, 0, 255).astype(np.uint8), model, tile=8),  # was off by one at (85, 24, 66, 79)
             compress(smooth_image(200, 264, seed=81), model, tile=8),
             compress(smooth_image(75, 130, seed=82, channels=1, dtype=np.uint16), model),
             compress(smooth_image(300, 120, seed=83), model)]  # two bands (rows 0-152, 152-304 padded)
    assert [len(reconstruction_windows(model, unpack(d).header)) for d in files] == [1, 1, 1, 2]
    for data in files:
        full = decompress(data, model)
        height, width = full.shape[:2]
        for x, y, w, h in [(85, 24, 66, 79), (150, 120, 40, 30), (0, 0, 17, 9), (100, 50, 30, 25), (3, 7, 120, 5),
                           (width - 4, 0, 4, 10), (0, 0, width, height), (10, 140, 50, 30), (0, 160, 120, 140)]:
            if x + w > width or y + h > height:
                continue
            part = decompress(data, model, region=(x, y, w, h))
            np.testing.assert_array_equal(part, full[y : y + h, x : x + w], err_msg=f"region {(x, y, w, h)}")
    # the windowed path of large images before format 4: a region is the crop of decode_windowed's output too
    from vqcodec import codec as codec_module

    monkeypatch.setattr(codec_module, "WINDOW_ABOVE", 0)
    old = as_version(files[0], 2)
    assert len(reconstruction_windows(model, unpack(old).header)) == 1  # 160x200: one 1024-pixel window
    old_tall = as_version(compress(smooth_image(1100, 16, seed=84), model), 3)
    assert len(reconstruction_windows(model, unpack(old_tall).header)) == 2
    for data, box in [(old, (85, 24, 66, 79)), (old_tall, (0, 1000, 16, 60))]:
        x, y, w, h = box
        full = decompress(data, model)
        np.testing.assert_array_equal(decompress(data, model, region=box), full[y : y + h, x : x + w])


@pytest.mark.slow
def test_region_is_exact_where_a_strip_of_the_image_would_not_be(model):
    """oneDNN sums a convolution in an order it picks from the shape, so decoding a strip across a
    region (what regions used to do) moved pixels of these regions of a 466x594 image by one level;
    a region decode runs the VQ-VAE on the full decode's shapes and matches it exactly."""
    sample = Path(vqcodec.__file__).parent / "samples" / "endeavour.png"
    pixels = np.ascontiguousarray(np.resize(np.asarray(Image.open(sample).convert("RGB")), (466, 594, 3)))
    data = compress(pixels, model)
    full = decompress(data, model)
    for x, y, w, h in [(160, 148, 186, 58), (199, 93, 302, 120)]:
        np.testing.assert_array_equal(decompress(data, model, region=(x, y, w, h)), full[y : y + h, x : x + w])


def marked_icc_profile(space: bytes = b"RGB ") -> bytes:
    """An sRGB profile (littleCMS's) declaring colour space ``space``, its creator field set to b"vqct": bytes
    no default profile has, so only the very profile given can come back."""
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[16:20], icc[80:84] = space, b"vqct"
    return bytes(icc)


def test_the_icc_profile_goes_through_compress_and_decompress(model, tmp_path):
    """The ICC profile of the file compressed comes back byte for byte from decompress_image (an RGB
    PNG, a 16-bit gray PNG with a gray profile, a TIFF), and a file without one gets none."""
    rgb, gray = marked_icc_profile(), marked_icc_profile(b"GRAY")
    Image.fromarray(smooth_image(24, 40, seed=3)).save(tmp_path / "rgb.png", icc_profile=rgb)
    Image.fromarray(smooth_image(20, 16, seed=4, channels=1, dtype=np.uint16)).save(tmp_path / "gray.png",
                                                                                     icc_profile=gray)
    Image.fromarray(smooth_image(16, 24, seed=5)).save(tmp_path / "rgb.tif", icc_profile=rgb)
    Image.fromarray(smooth_image(16, 24, seed=6)).save(tmp_path / "none.png")
    for name, icc in (("rgb.png", rgb), ("gray.png", gray), ("rgb.tif", rgb), ("none.png", None)):
        data = compress(tmp_path / name, model)
        assert unpack(data).header.icc_profile == icc, name
        image = decompress_image(data, model)
        assert image.icc_profile == icc, name
        assert image.pixels.shape[2] == (1 if name == "gray.png" else 3)


def test_compress_takes_a_bytearray_and_an_open_binary_file(model, tmp_path):
    img = smooth_image(12, 20, seed=101)
    Image.fromarray(img).save(tmp_path / "a.png")
    want = compress(img, model)
    assert compress(bytearray((tmp_path / "a.png").read_bytes()), model) == want
    assert compress(memoryview((tmp_path / "a.png").read_bytes()), model) == want
    with open(tmp_path / "a.png", "rb") as f:
        assert compress(f, model) == want


def test_a_device_the_model_is_not_on_is_refused_naming_the_device(model):
    img = smooth_image(8, 8, seed=1)
    with pytest.raises(VQCodecError, match=r"^device must be 'cpu' or 'cuda', not 'mps'$"):
        compress(img, device="mps")
    with pytest.raises(VQCodecError, match="device"):  # a loaded model is not silently used elsewhere
        compress(img, model, device="mps")
    data = compress(img, model)
    with pytest.raises(VQCodecError, match="device"):
        decompress(data, model, device="mps")


_THREADS_WORKER = """
import sys
import numpy as np
import torch

torch.set_num_threads(int(sys.argv[1]))
from vqcodec import compress
from vqcodec.testing import shapes_image, smooth_image

images = [smooth_image(8, 88, seed=1), smooth_image(40, 8, seed=2), shapes_image(3, 96, 128),
          smooth_image(72, 80, seed=4), smooth_image(136, 200, seed=5, channels=1)]
with open(sys.argv[2], "wb") as f:
    for img in images:
        data = compress(img)
        f.write(len(data).to_bytes(4, "little") + data)
"""


@pytest.mark.slow
def test_compress_gives_the_same_file_on_1_and_2_threads(tmp_path):
    """Several shapes, thin ones included (where oneDNN and MKL split their sums across threads)."""
    (tmp_path / "worker.py").write_text(_THREADS_WORKER)
    procs = {t: subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(t), str(tmp_path / f"{t}.bin")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for t in (1, 2)}
    for t, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{t} threads: {err.decode()}"
    assert (tmp_path / "1.bin").read_bytes() == (tmp_path / "2.bin").read_bytes()


def test_the_vqvae_runs_on_one_thread_whatever_the_setting(model, monkeypatch, tmp_path):
    """Item 11: the float encoder's sums (and the decoder's) must not depend on the thread count,
    in this process or in the decoder's worker processes (which is why the spy writes to a file)."""
    log = tmp_path / "threads"
    encode, decode = model.vqvae.encode, model.vqvae.decode

    def spy(fn):
        def wrapped(*args, **kwargs):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {torch.get_num_threads()}\n")
            return fn(*args, **kwargs)
        return wrapped

    def seen() -> list[tuple[int, int]]:
        lines = log.read_text().split() if log.exists() else []
        log.unlink(missing_ok=True)
        return [(int(pid), int(n)) for pid, n in zip(lines[::2], lines[1::2])]

    monkeypatch.setattr(model.vqvae, "encode", spy(encode))
    monkeypatch.setattr(model.vqvae, "decode", spy(decode))
    torch.set_num_threads(2)
    data = compress(smooth_image(16, 24, seed=7), model)
    decompress(data, model)
    assert [n for _, n in seen()] == [1, 1]
    decompress(compress(smooth_image(264, 24, seed=7), model), model)  # two bands, in two worker processes
    calls = seen()
    assert [n for _, n in calls] == [1, 1, 1]
    assert len({pid for pid, _ in calls[1:]} - {os.getpid()}) == 2  # the bands ran in two other processes
    assert torch.get_num_threads() == 2
