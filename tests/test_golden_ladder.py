"""Golden files for today's quality ladder, and every shipped model's fingerprint pinned.

tests/test_codec.py pins the format with golden files of ``paper``, a model off the ladder; this module
pins what the ladder's models write and decode (format version 4), before anything changes them: one
golden file for each model on the ladder of 2026-12 (vqcodec 0.5.0), at a rung of its own (and, below
LADDER, one for each model of both generations of the fast ladder, stored as version 5):

    paper-down-wf@0.75  quality 3: coded below full size, decoded through the learned upscaler
    paper-wf            quality 5, the default: coded at full size
    paper-up-t5@1.25    quality 6: coded above full size, decoded by the refit decoder, then scaled down
    paper-up-b3@1.75    quality 8: the same, with paper-up-b3's cut bottom prior

Each rung codes ``ladder_image(width, height)`` (integer arithmetic only: nothing to keep but this
file), its size chosen so that the coded image is about 300x264 pixels at every rung: 3x3 tiles of 32
bottom codes (the last row and column partial) and two bands of the VQ-VAE decoder
(``vqvae.windows.band_windows``: an image coded at least BAND_MIN_HEIGHT = 256 pixels high).
tests/data/ladder/<rung>.vqc holds the file ``compress`` writes today, <rung>.sha256 the SHA-256 of
its decoded pixel bytes (``decompress(...).tobytes()``, in golden.sha256's layout). The test checks
that the stored file decodes to those pixels, that its code maps decode exactly, and that compressing
the image today gives the stored bytes once converted to version 4 (the same payloads under a version-4
header: ``as_version``), while the file itself is version 5 and its code checksums are those of the
stored file's codes. The stored files stay version 4 (users hold such files: they must decode forever;
--regen-golden writes them as version 4 too). Files of the other rungs (the same models at other scales),
and of every shipped model at scale 1, are pinned to the byte on tests/data/guard.png by
``test_zoo.test_quality_guard``.

When a model or the format changes on purpose (never for a file that users may hold: those must keep
decoding), regenerate the files from the repository root with

    .venv/bin/python -m pytest tests/test_golden_ladder.py --regen-golden

which writes each rung's .vqc and .sha256 anew, then checks them as usual; review and commit them.
A new model on the ladder gets a rung in LADDER (and its fingerprint in FINGERPRINTS) first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vqcodec.codec import compress, decompress, reconstruction_windows
from vqcodec.coding.bitstream import FORMAT_VERSION, pack, unpack
from vqcodec.coding.tile_codec import decode_tiles, tile_code_checksums
from vqcodec.errors import VQCodecError
from vqcodec.resample import coded_size
from vqcodec.testing import assert_codes_equal, image_codes
from vqcodec.zoo import registry
from vqcodec.zoo.codec_model import load_codec_model

LADDER_DATA = Path(__file__).resolve().parent / "data" / "ladder"

# Every shipped model's fingerprint as vqcodec 0.5.0 shipped it: files record it, and are found by it.
FINGERPRINTS = {
    "paper": "57a57c49cb30abd2344d4222711e75d9",
    "paper-down": "5be99107a0696588cbd6dbe84969c842",
    "paper-down-wf": "d4546a6da9a9444b0d82eeae1fd7efd1",
    "paper-refit": "ed65596702b730d1f4cbb5ca3a6ec1a4",
    "paper-refit2": "d3e59791a9821773e640019aa949a2c6",
    "paper-up": "1896251c7de900f833316b083b1ef8b8",
    "paper-up-b3": "ad22a3ba4490e943018ea486383dbb40",
    "paper-up-b4": "352dcf465b7fe19b9d3b376b873f793e",
    "paper-up-t5": "c4f4e4758e0296bf467f9bbb4888b840",
    "paper-up-wf": "d7a15a3e12d2e7a53ec98d53991c8923",
    "paper-wf": "18b4de11a29f0093801d29d1f3f4dca3",
    # the fast ladder (multi-pass priors, 2026-12-07)
    "fast": "2182fc8f0cf018f56393636780fc6126",
    "fast-down": "828fbd61c20c0f8deabfe6ee124bb618",
    "fast-up": "95cdd1b93f03c0b21cdc86cc75995c26",
    # the fast ladder's second models (8-bit multi-pass priors, 2026-12-07)
    "fast2": "c36584002ab9e8bc31922b496d3012cf",
    "fast2-down": "92620323a4da89cc138d4f5915948f64",
    "fast2-up": "eb0814666c1283b947e23d6c29506aab",
}

# rung name -> (model, scale, (width, height) of its image, format version of the stored file): every
# model on both ladders. The fast ladder's models code tiles of 64 bottom codes, so their images are
# coded at about 560x520 pixels for the same 3x3 tiles; their files are version 5, as first written.
LADDER = {
    "paper-down-wf@0.75": ("paper-down-wf", 0.75, (400, 352), 4),
    "paper-wf": ("paper-wf", 1.0, (300, 264), 4),
    "paper-up-t5@1.25": ("paper-up-t5", 1.25, (240, 212), 4),
    "paper-up-b3@1.75": ("paper-up-b3", 1.75, (172, 152), 4),
    "fast-down@0.75": ("fast-down", 0.75, (747, 693), 5),
    "fast": ("fast", 1.0, (560, 520), 5),
    "fast-up@1.25": ("fast-up", 1.25, (448, 416), 5),
    "fast-up@1.75": ("fast-up", 1.75, (320, 297), 5),
    "fast2-down@0.75": ("fast2-down", 0.75, (747, 693), 5),
    "fast2": ("fast2", 1.0, (560, 520), 5),
    "fast2-up@1.25": ("fast2-up", 1.25, (448, 416), 5),
    "fast2-up@1.75": ("fast2-up", 1.75, (320, 297), 5),
}


def ladder_image(width: int, height: int) -> np.ndarray:
    """A ``width`` x ``height`` RGB pattern from integer arithmetic only: test_codec.golden_image()'s
    gradients, diagonal stripes and disc at any size, a checkerboard of 8-pixel squares and a patch of
    hashed noise (sharp edges and texture, so the codes are not all alike)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    r = x * 255 // (width - 1)
    g = y * 255 // (height - 1)
    b = ((x + 2 * y) * 9) % 256
    disc = (x - width * 2 // 3) ** 2 + (y - height // 3) ** 2 < (min(width, height) // 5) ** 2
    r, g, b = np.where(disc, 230, r), np.where(disc, 40, g), np.where(disc, 60, b)
    check = ((x // 8 + y // 8) % 2 == 0) & (x < width // 3) & (y > height // 2)
    r, g, b = np.where(check, 20, r), np.where(check, 200, g), np.where(check, 220, b)
    noise = ((x * 7919 + y * 104729 + x * y * 31) * 2654435761 >> 7) % 64  # < 2**57: no overflow
    patch = (y > height * 3 // 4) & (x > width // 2)
    r, g, b = (np.where(patch, 96 + noise, c) for c in (r, g, b))
    return np.stack([r, g, b], -1).astype(np.uint8)


def pixel_digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(pixels.tobytes()).hexdigest()


def recorded_digest(rung: str) -> str:
    """The SHA-256 of a rung's decoded pixel bytes, from <rung>.sha256 (``digest  <rung>.vqc``)."""
    digest, name = (LADDER_DATA / f"{rung}.sha256").read_text().split()
    assert name == f"{rung}.vqc"
    return digest


def as_version(data: bytes, version: int) -> bytes:
    """The same payloads under a header of another format version (without the code checksums below 5)."""
    stream = unpack(data)
    return pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, version=version)))


def write_golden_file(rung: str) -> None:
    """Write a rung's .vqc and .sha256 anew (``pytest --regen-golden``; see the module docstring)."""
    name, scale, (width, height), version = LADDER[rung]
    LADDER_DATA.mkdir(parents=True, exist_ok=True)
    data = as_version(compress(ladder_image(width, height), load_codec_model(name), scale=scale), version)
    (LADDER_DATA / f"{rung}.vqc").write_bytes(data)
    digest = pixel_digest(decompress(data, load_codec_model(name)))
    (LADDER_DATA / f"{rung}.sha256").write_text(f"{digest}  {rung}.vqc\n")


def first_difference(a: bytes, b: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{len(a)} bytes against {len(b)}, first difference at byte {at}"


@pytest.mark.slow
@pytest.mark.parametrize("rung", sorted(LADDER))
def test_ladder_golden_file(rung, regen_golden) -> None:
    if regen_golden:
        write_golden_file(rung)
    name, scale, (width, height), version = LADDER[rung]
    path = LADDER_DATA / f"{rung}.vqc"
    assert path.exists(), f"no golden file for {rung}: run pytest {Path(__file__).name} --regen-golden"
    model = load_codec_model(name)
    assert model.fingerprint.hex() == FINGERPRINTS[name], f"model {name} changed: it must not (its files)"
    data = path.read_bytes()
    stream = unpack(data)
    head = stream.header
    assert head.model_fingerprint.hex() == FINGERPRINTS[name]
    assert registry.find_by_fingerprint(head.model_fingerprint) == registry.SHIPPED_DIR / f"{name}.safetensors"
    assert (head.width, head.height, head.channels, head.bit_depth, head.version) == (width, height, 3, 8, version)
    size = (head.coded_width, head.coded_height)
    assert size == coded_size(width, height, scale) and (head.coded_size is None) == (scale == 1)
    # what the file pins: several tiles in both directions (partial ones at the borders), two bands
    shapes = model.vqvae.code_shapes(size[1], size[0])
    tile = head.tile_size
    assert shapes[0][0] > 2 * tile and shapes[0][1] > 2 * tile and shapes[0][0] % tile and shapes[0][1] % tile
    assert len(stream.tiles) == 9
    assert len(reconstruction_windows(model, head)) == 2
    source = ladder_image(width, height)
    # the code maps decode exactly (integer priors + range coder: platform-independent) ...
    codes = decode_tiles(model.priors, shapes, list(stream.tiles), tile, order=head.symbol_order)
    assert_codes_equal(codes, image_codes(model, source, size))
    # ... to the recorded pixels (this also pins the float VQ-VAE decoder, the upscaler and the resampling)
    pixels = decompress(data, model)
    assert pixels.shape == source.shape and pixels.dtype == np.uint8
    assert pixel_digest(pixels) == recorded_digest(rung), (
        f"{path.name} decodes to other pixels than recorded although its codes decode exactly: the VQ-VAE "
        "decoder's float arithmetic differs here (torch version / CPU), or the model changed"
    )
    # and compressing the image today writes the very same payloads: the same file in its version ...
    today = compress(source, model, scale=scale)
    old = as_version(today, version)
    assert old == data, f"compressing ladder_image{(width, height)} no longer gives {path.name}: " + (
        first_difference(old, data))
    # ... and as today's version 5, whose checksum of each tile's codes is that of the codes decoded above
    new = unpack(today)
    assert new.header.version == FORMAT_VERSION == 5 and new.tiles == stream.tiles
    assert new.code_checksums == tuple(tile_code_checksums(codes, tile).values())


def test_every_ladder_model_has_a_golden_file() -> None:
    """Each model on the ladder has a rung here: a new ladder brings its golden files. (A model that
    left its ladder keeps its golden file: its files must keep decoding.)"""
    rungs = [r for which in registry.LADDERS for r in registry.ladder(which)]
    steps = {(r.name, r.model, r.scale) for r in rungs}
    on_a_ladder = {r.model for r in rungs}
    assert {(rung, name, scale) for rung, (name, scale, _, _) in LADDER.items() if name in on_a_ladder} <= steps
    missing = {r.model for r in rungs} - {name for name, _, _, _ in LADDER.values()}
    assert not missing, f"no golden file for ladder model(s) {sorted(missing)}: add a rung to LADDER"


def test_a_damaged_golden_file_is_refused() -> None:
    """Any byte of a stored file changed is caught by its checksums (header CRC32, tile CRC-16s):
    a damaged golden file fails loudly rather than pinning something else."""
    for rung in LADDER:
        data = (LADDER_DATA / f"{rung}.vqc").read_bytes()
        for at in range(len(data)):
            damaged = bytearray(data)
            damaged[at] ^= 0x5A
            with pytest.raises(VQCodecError):
                unpack(bytes(damaged))
        with pytest.raises(VQCodecError):
            unpack(data[:-1])


def test_shipped_manifest_holds_the_pinned_fingerprints() -> None:
    """models.json (what finds a file's model) lists every pinned model with its fingerprint, and
    nothing unpinned (a new shipped model gets its line in FINGERPRINTS)."""
    manifest = json.loads((registry.SHIPPED_DIR / "models.json").read_text())["models"]
    assert {n: e["fingerprint"] for n, e in manifest.items() if n in FINGERPRINTS} == FINGERPRINTS
    assert set(manifest) == set(FINGERPRINTS), f"unpinned shipped models: {sorted(set(manifest) - set(FINGERPRINTS))}"


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_shipped_model_fingerprint_is_pinned(name) -> None:
    """Each shipped model, loaded (its tensors hashed, a delta merged with its base), has the
    fingerprint it shipped with, and so has its manifest entry."""
    assert load_codec_model(name).fingerprint.hex() == FINGERPRINTS[name]
    entry = {e.name: e for e in registry.list_models()}[name]
    assert entry.shipped and entry.fingerprint == FINGERPRINTS[name]
    assert entry.path == registry.SHIPPED_DIR / f"{name}.safetensors"
