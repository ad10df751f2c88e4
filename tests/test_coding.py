"""Tests for ``vqcodec.coding``: the `.vqc` container (round trips, the exact byte layout, every
refusal, fuzzing), the tile grid, exact code round trips through the tile codec (2 and 3 levels,
batched and single tiles), coded size against the model's cross-entropy, and the range coder's
handling of invalid data."""

from __future__ import annotations

import binascii
import dataclasses
import random
import struct
import time
import zlib

import numpy as np
import pytest
import torch

from vqcodec.coding.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    MAX_PIXELS,
    MAX_SIDE,
    Bitstream,
    Header,
    pack,
    read_header,
    tile_checksum,
    unpack,
)
from vqcodec.coding.range_coder import TileDecoders
from vqcodec.coding.tile_codec import decode_tiles, encode_tiles
from vqcodec.coding.tiles import tile_grid
from vqcodec.errors import VQCodecError
from vqcodec.testing import assert_codes_equal, code_shapes, image_codes, smooth_image
from vqcodec.zoo.codec_model import CodecModel

FP = bytes(range(16))


def header(**overrides: object) -> Header:
    fields: dict[str, object] = dict(
        model_fingerprint=FP, width=768, height=512, channels=3, bit_depth=8, levels=2, tile_size=16
    )
    fields.update(overrides)
    return Header(**fields)  # type: ignore[arg-type]


def leb128(value: int) -> bytes:
    """Independent of the module's encoder, so the tests check the format, not the code against itself."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def raw(
    *,
    magic: bytes = MAGIC,
    version: int = FORMAT_VERSION,
    flags: int = 0,
    width: bytes = leb128(64),
    height: bytes = leb128(48),
    fields: bytes = bytes((3, 8, 2, 4)),
    tile_count: bytes | None = None,
    tiles: tuple[bytes, ...] = (b"abc", b"de"),
    lengths: bytes | None = None,
    checksums: tuple[int, ...] | None = None,
    icc: bytes | None = None,
    header_crc: int | None = None,
    tail: bytes = b"",
) -> bytes:
    """Hand-assemble a file with arbitrary field values and (by default) correct checksums."""
    head = magic + bytes((version, flags)) + FP + width + height + fields
    head += leb128(len(tiles)) if tile_count is None else tile_count
    head += b"".join(leb128(len(t)) for t in tiles) if lengths is None else lengths
    crcs = [binascii.crc_hqx(t, 0) for t in tiles] if checksums is None else checksums
    head += b"".join(struct.pack("<H", c) for c in crcs)
    if icc is not None:
        head += leb128(len(icc)) + icc
    head += struct.pack("<I", zlib.crc32(head) if header_crc is None else header_crc)
    return head + b"".join(tiles) + tail


# --- the container: round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        Bitstream(header(), (b"\x01\x02\x03",)),
        Bitstream(header(icc_profile=b"\x00" * 3144), (b"a" * 300, b"", b"b" * 20000)),
        Bitstream(header(width=1, height=1, channels=1, bit_depth=16, levels=3, tile_size=4), (b"",)),
        Bitstream(
            header(width=MAX_SIDE, height=MAX_PIXELS // MAX_SIDE, tile_size=256, model_fingerprint=FP[::-1]),
            tuple(bytes([i % 256]) * (i * 7) for i in range(200)),
        ),
    ],
)
def test_round_trip(stream: Bitstream) -> None:
    data = pack(stream)
    assert unpack(data) == stream
    assert read_header(data) == stream.header
    assert pack(unpack(data)) == data
    assert unpack(bytearray(data)) == stream


def test_exact_layout_with_icc() -> None:
    """The example of docs/bitstream.md, as version 1 (version 2: only that byte and the CRC differ)."""
    stream = Bitstream(header(width=300, height=3, icc_profile=b"ICC", version=1), (b"ab", b""))
    expected = bytes.fromhex(
        "56 51 43 89"  # magic "VQC\x89"
        "01"  # format version
        "01"  # flags: ICC present
        "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"  # model fingerprint
        "ac 02"  # width 300 as LEB128
        "03"  # height 3
        "03 08 02 04"  # channels, bit depth, levels, log2(tile size 16)
        "02"  # tile count
        "02 00"  # tile payload lengths
        "ff 74 00 00"  # CRC-16/CCITT of each payload, little-endian: 0x74ff for "ab", 0 for ""
        "03 49 43 43"  # ICC length + "ICC"
        "c3 fd 3e 18"  # CRC32 of everything above, little-endian
        "61 62"  # payloads back to back: "ab" + "", and nothing after them
    )
    assert pack(stream) == expected
    assert unpack(expected) == stream
    v2 = pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, version=2)))
    crc_at = len(expected) - len(b"ab") - 4
    assert v2[4] == 2 and {i for i in range(len(v2)) if v2[i] != expected[i]} <= {4, *range(crc_at, crc_at + 4)}
    assert unpack(v2).header.version == 2 and unpack(v2).header.symbol_order == "fast"
    assert unpack(expected).header.symbol_order == "raster"


def test_exact_layout_without_icc() -> None:
    stream = Bitstream(
        header(
            model_fingerprint=b"\xff" * 16,
            width=5,
            height=4,
            channels=1,
            bit_depth=16,
            levels=3,
            tile_size=256,
            version=1,
        ),
        (b"xyz",),
    )
    expected = bytes.fromhex(
        "56 51 43 89 01 00"
        + "ff" * 16
        + "05 04 01 10 03 08"  # width, height, channels, bit depth, levels, log2(256)
        "01 03"  # one tile of 3 bytes
        "b5 1c"  # its CRC-16 (0x1cb5)
        "19 dc ed 8a"  # header CRC
        "78 79 7a"  # "xyz"
    )
    assert pack(stream) == expected


def test_tile_checksum_is_crc16_ccitt() -> None:
    assert tile_checksum(b"123456789") == 0x31C3  # the CRC-16/XMODEM check value
    assert tile_checksum(b"") == 0


def test_overhead_is_small() -> None:
    tiles = tuple(bytes(417) for _ in range(24))  # ~10 kB in 24 tiles
    overhead = len(pack(Bitstream(header(), tiles))) - sum(map(len, tiles))
    assert overhead == 35 + 24 * (2 + 2)  # a 2-byte length and a 2-byte checksum per tile


# --- refusals ----------------------------------------------------------------------------------


def refused(data: bytes, match: str) -> None:
    with pytest.raises(VQCodecError, match=match):
        unpack(data)
    with pytest.raises(VQCodecError, match=match):
        read_header(data)


def test_helper_builds_a_valid_file() -> None:
    assert unpack(raw()).tiles == (b"abc", b"de")


@pytest.mark.parametrize("data", [b"", b"V", b"VQC", MAGIC, MAGIC + b"\x01", raw()[:30], raw()[:-1]])
def test_truncated(data: bytes) -> None:
    refused(data, "truncated")


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n", b"hello world", b"X", raw(magic=b"VQC\x88")])
def test_bad_magic(data: bytes) -> None:
    refused(data, "^not a vqcodec file")


def test_newer_version() -> None:
    refused(raw(version=5),
            r"^written by a newer vqcodec \(format version 5\); this one reads versions 1, 2, 3 and 4\.$")


@pytest.mark.parametrize("version", [3, 4])
def test_versions_3_and_4_add_the_coded_size(version) -> None:
    """Flag bit 1 (from version 3): two varints after the height, the size the codes describe.
    Version 4 has version 3's layout; only the decoder's windows differ (``Header.banded``)."""
    plain = Bitstream(header(width=300, height=3, version=version), (b"ab",))
    assert plain.header.coded_width == 300 and plain.header.coded_height == 3
    stream = Bitstream(header(width=300, height=3, coded_size=(150, 2), version=version), (b"ab",))
    assert (stream.header.coded_width, stream.header.coded_height) == (150, 2)
    assert stream.header.banded == (version == 4) and stream.header.symbol_order == "fast"
    data = pack(stream)
    expected = raw(version=version, flags=0x02, width=leb128(300) + leb128(3) + leb128(150), height=leb128(2),
                   fields=bytes((3, 8, 2, 4)), tiles=(b"ab",))
    assert data == expected and data[5] == 0x02 and data[22:27] == bytes.fromhex("ac 02 03 96 01")
    assert unpack(data) == stream and pack(unpack(data)) == data
    with_icc = Bitstream(header(coded_size=(1, 1), icc_profile=b"ICC", version=version), (b"",))
    assert unpack(pack(with_icc)) == with_icc and pack(with_icc)[5] == 0x03


def test_new_files_are_version_4() -> None:
    """What vqcodec writes: version 4, with or without a coded size; versions 1 to 3 stay readable."""
    assert FORMAT_VERSION == 4
    assert header().version == 4 and header(coded_size=(5, 5)).version == 4 and header().banded
    assert not any(header(version=v).banded for v in (1, 2, 3))


@pytest.mark.parametrize(("overrides", "match"), [
    (dict(coded_size=(768, 512)), "equals the image size"),
    (dict(coded_size=(0, 5)), "coded width"),
    (dict(coded_size=(5, MAX_SIDE + 1)), "coded height"),
    (dict(coded_size=(MAX_SIDE, MAX_SIDE)), "exceeds"),
    (dict(coded_size=(5, 5), version=2), "needs format version 3"),
    (dict(coded_size=[5, 5]), "coded size must be"),
])
def test_bad_coded_size_is_refused(overrides, match) -> None:
    with pytest.raises(VQCodecError, match=match):
        header(**overrides)


def test_coded_size_flag_is_unknown_before_version_3() -> None:
    refused(raw(version=2, flags=0x02), "unknown flags 0x02; the file is not valid version 2")
    refused(raw(version=3, flags=0x04), "unknown flags 0x04; the file is not valid version 3")
    refused(raw(version=4, flags=0x04), "unknown flags 0x04; the file is not valid version 4")
    refused(raw(version=3, flags=0x02, width=leb128(64) + leb128(48) + leb128(64), height=leb128(48)),
            "equals the image size")


def test_readable_versions_parse_and_others_cannot_be_written() -> None:
    for version in (1, 2, 3, 4):
        assert unpack(raw(version=version)).header.version == version
    for version in (0, 5, True):
        with pytest.raises(VQCodecError, match="format version must be one of"):
            header(version=version)


def test_version_zero() -> None:
    refused(raw(version=0), "unsupported format version 0")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (bytes((2, 8, 2, 4)), "channel count must be 1 or 3"),
        (bytes((0, 8, 2, 4)), "channel count must be 1 or 3"),
        (bytes((3, 12, 2, 4)), "bit depth must be 8 or 16"),
        (bytes((3, 8, 1, 4)), "levels must be 2 or 3"),
        (bytes((3, 8, 4, 4)), "levels must be 2 or 3"),
        (bytes((3, 8, 2, 1)), "tile size"),
        (bytes((3, 8, 2, 9)), "tile size"),
        (bytes((3, 8, 2, 255)), "tile size"),
    ],
)
def test_bad_fields(fields: bytes, match: str) -> None:
    refused(raw(fields=fields), match)


@pytest.mark.parametrize(
    ("width", "height", "match"),
    [
        (0, 48, "width must be a positive"),
        (64, 0, "height must be a positive"),
        (MAX_SIDE + 1, 1, "width 131073 exceeds"),
        (1, MAX_SIDE + 1, "height 131073 exceeds"),
        (MAX_SIDE, MAX_SIDE, "exceeds the maximum of 1073741824 pixels"),
        ((1 << 64) - 1, 1, "exceeds"),
    ],
)
def test_bad_dimensions(width: int, height: int, match: str) -> None:
    refused(raw(width=leb128(width), height=leb128(height)), match)


def test_absurd_width_refused_fast() -> None:
    for data in (raw(width=leb128(2**40)), raw(width=leb128(2**40), header_crc=0)):
        start = time.perf_counter()
        with pytest.raises(VQCodecError):
            unpack(data)
        assert time.perf_counter() - start < 0.5


def test_varint_too_long() -> None:
    refused(raw(width=b"\x80" * 10 + b"\x01"), "longer than 10 bytes")


def test_varint_beyond_64_bits() -> None:
    refused(raw(width=b"\xff" * 9 + b"\x02"), "too large")


def test_varint_not_minimal() -> None:
    refused(raw(width=b"\xc0\x00"), "not minimally encoded")  # 64 padded to two bytes


def test_tile_count_exceeds_file() -> None:
    refused(raw(tile_count=leb128(10**6)), "tile count 1000000 cannot fit")


def test_zero_tiles() -> None:
    refused(raw(tiles=()), "no tiles")


def test_lengths_exceed_file() -> None:
    refused(raw(lengths=leb128(3) + leb128(10**15)), "truncated: the tile lengths need")


def test_lengths_short_of_file() -> None:
    refused(raw(lengths=leb128(3) + leb128(1)), "trailing garbage")


def test_trailing_garbage() -> None:
    refused(raw(tail=b"\x00"), "1 bytes of trailing garbage")


def test_header_crc() -> None:
    data = bytearray(raw())
    data[8] ^= 0x01  # a fingerprint bit
    refused(bytes(data), "^header is corrupted")
    refused(raw(header_crc=0), "^header is corrupted")


def test_header_crc_checked_before_field_meaning() -> None:
    data = bytearray(raw())
    channels_at = len(MAGIC) + 2 + len(FP) + 2  # after magic, version, flags, fingerprint, 1-byte sides
    assert data[channels_at] == 3
    data[channels_at] = 2  # an invalid value, but the CRC no longer matches: report corruption
    refused(bytes(data), "^header is corrupted")


def test_tile_checksum_mismatch() -> None:
    data = bytearray(raw())
    data[-4] ^= 0x40  # inside tile 0's payload "abc"
    refused(bytes(data), r"^payload of tile 0 is corrupted \(checksum mismatch\)\.$")
    data = bytearray(raw())
    data[-1] ^= 0x01  # the last byte of tile 1
    refused(bytes(data), "^payload of tile 1 is corrupted")
    good = [binascii.crc_hqx(t, 0) for t in (b"abc", b"de")]
    refused(raw(checksums=(good[0], good[1] ^ 1)), "^payload of tile 1 is corrupted")
    refused(raw(checksums=(0, 0)), r"^payloads of 2 tiles \(0, 1\) are corrupted")


def test_salvage_reports_damaged_tiles() -> None:
    tiles = (b"tile-0", b"", b"tile-2", b"tile-3")
    data = bytearray(raw(tiles=tiles))
    data[-1] ^= 0x80  # tile 3
    data[-len(b"tile-3") - 2] ^= 0x01  # tile 2
    stream = unpack(bytes(data), salvage=True)
    assert stream.damaged == (2, 3)
    assert stream.tiles[:2] == tiles[:2] and stream.tiles[2:] != tiles[2:]  # damaged bytes as found
    with pytest.raises(VQCodecError, match=r"^payloads of 2 tiles \(2, 3\) are corrupted"):
        unpack(bytes(data))
    assert pack(stream) != bytes(data)  # pack writes checksums for the tiles as they are now
    assert unpack(pack(stream)).damaged == ()
    assert unpack(raw(tiles=tiles), salvage=True) == Bitstream(unpack(raw(tiles=tiles)).header, tiles)
    with pytest.raises(VQCodecError, match="^header is corrupted"):  # structure errors stay errors
        unpack(raw(tiles=tiles, header_crc=0), salvage=True)
    with pytest.raises(VQCodecError, match="trailing garbage"):
        unpack(raw(tiles=tiles, tail=b"x"), salvage=True)


def test_damaged_field_is_validated() -> None:
    for bad in ([0], (2,), (-1,), (True,)):
        with pytest.raises(VQCodecError, match="damaged"):
            Bitstream(header(), (b"a", b"b"), bad)  # type: ignore[arg-type]


def test_unknown_flags() -> None:
    refused(raw(flags=0x04), "unknown flags 0x04")
    refused(raw(flags=0x80), "unknown flags 0x80")


def test_empty_icc_refused() -> None:
    refused(raw(flags=0x01, icc=b""), "ICC profile must be non-empty")
    with pytest.raises(VQCodecError):
        header(icc_profile=b"")


def test_icc_length_exceeds_file() -> None:
    data = raw(flags=0x01, icc=b"abc")
    data = data.replace(b"\x03abc", b"\x7fabc", 1)
    refused(data, "truncated")


@pytest.mark.parametrize(
    "overrides",
    [
        dict(model_fingerprint=b"short"),
        dict(model_fingerprint="0123456789abcdef"),
        dict(width=0),
        dict(width=-5),
        dict(width=2.0),
        dict(height=MAX_SIDE + 1),
        dict(width=MAX_SIDE, height=MAX_SIDE),
        dict(channels=2),
        dict(channels=True),
        dict(bit_depth=12),
        dict(levels=1),
        dict(tile_size=2),
        dict(tile_size=24),
        dict(tile_size=512),
        dict(icc_profile=bytearray(b"x")),
    ],
)
def test_invalid_header_cannot_be_built(overrides: dict[str, object]) -> None:
    with pytest.raises(VQCodecError):
        header(**overrides)


@pytest.mark.parametrize("tiles", [(), [b"a"], (b"a", bytearray(b"b")), ("a",)])
def test_invalid_tiles_cannot_be_packed(tiles: object) -> None:
    with pytest.raises(VQCodecError):
        Bitstream(header(), tiles)  # type: ignore[arg-type]


# --- fuzzing -----------------------------------------------------------------------------------


def mutate(data: bytes, header_end: int, rng: random.Random) -> bytes:
    """Flip, insert or delete bytes; half the time inside the header with its CRC then repaired,
    so the field checks behind the CRC get exercised too."""
    fix_crc = rng.random() < 0.5
    hi = header_end if fix_crc else len(data)
    b = bytearray(data)
    pos = rng.randrange(hi)
    kind = rng.randrange(3)
    if kind == 0:
        b[pos] ^= rng.randrange(1, 256)
        delta = 0
    elif kind == 1:
        delta = rng.randint(1, 8)
        b[pos:pos] = rng.randbytes(delta)
    else:
        delta = -rng.randint(1, min(8, hi - pos))
        del b[pos : pos - delta]
    if fix_crc:
        end = header_end + delta
        b[end : end + 4] = struct.pack("<I", zlib.crc32(b[:end]))
    return bytes(b)


def test_fuzz_mutations_and_truncations() -> None:
    rng = random.Random(20240611)
    stream = Bitstream(header(icc_profile=b"icc-profile"), (b"tile-0" * 30, b"", b"t2", rng.randbytes(200)))
    data = pack(stream)
    header_end = len(data) - sum(map(len, stream.tiles)) - 4
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(500):
        mutated = mutate(data, header_end, rng)
        try:
            result = unpack(mutated)
        except VQCodecError:
            outcomes["refused"] += 1
        else:
            outcomes["ok"] += 1
            assert pack(result) == mutated  # the encoding is canonical
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes
    for cut in rng.sample(range(len(data)), 200):
        with pytest.raises(VQCodecError):
            unpack(data[:cut])


# --- tiles and the tile codec ------------------------------------------------------------------


def coded_bits_and_cross_entropy(m: CodecModel, codes: list[torch.Tensor], tile: int) -> tuple[int, float, int]:
    """(payload bits, sum of -log2 p(code) under the normalised encoder probabilities, tiles)."""
    payloads = encode_tiles(m.priors, codes, tile)
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], tile)
    assert len(payloads) == len(tiles)
    ce = 0.0
    for t in tiles:
        for level in reversed(range(m.levels)):
            win = [codes[lv][0][t.window(lv)][None] for lv in range(level, m.levels)]
            probs = m.priors[level].parallel_probs(win[0], win[1:] or None)[0]
            p = probs / probs.sum(-1, keepdim=True)
            ce -= float(torch.log2(p.gather(-1, win[0][0][..., None])).sum())
    return 8 * sum(len(p) for p in payloads), ce, len(tiles)


@pytest.mark.parametrize(("height", "width", "seed"), [(16, 16, 1), (40, 72, 2), (72, 40, 3), (100, 36, 4)])
def test_code_round_trip_is_exact(model, height, width, seed):
    codes = image_codes(model, smooth_image(height, width, seed))
    assert code_shapes(codes) == model.vqvae.code_shapes(height, width)
    assert len(torch.unique(codes[0])) > 1  # a real code map, not a constant one
    payloads = encode_tiles(model.priors, codes, model.tile)
    assert_codes_equal(decode_tiles(model.priors, code_shapes(codes), payloads, model.tile), codes)


@pytest.mark.parametrize("tile", [16, 8, 4])
def test_three_level_code_round_trip(model3, tile):
    codes = image_codes(model3, smooth_image(48, 64, seed=11))
    assert code_shapes(codes) == [(12, 16), (6, 8), (3, 4)]
    assert all(len(torch.unique(c)) > 1 for c in codes[:2])
    payloads = encode_tiles(model3.priors, codes, tile)
    assert_codes_equal(decode_tiles(model3.priors, code_shapes(codes), payloads, tile), codes)
    # uniformly random codes exercise every symbol and the conditioning far from the data
    gen = torch.Generator().manual_seed(tile)
    rand = [torch.randint(0, 32, (1, h, w), generator=gen) for h, w in code_shapes(codes)]
    payloads = encode_tiles(model3.priors, rand, tile)
    assert_codes_equal(decode_tiles(model3.priors, code_shapes(rand), payloads, tile), rand)


def test_batched_tiles_decode_like_single_tiles(model):
    tile, priors = 4, model.priors
    codes = image_codes(model, smooth_image(40, 56, seed=31))
    shapes = code_shapes(codes)
    tiles = tile_grid(shapes[0][0], shapes[0][1], tile)
    assert len(tiles) == 12 and sum((t.height, t.width) == (4, 4) for t in tiles) == 6  # 4 shape groups
    payloads = encode_tiles(priors, codes, tile)
    batched = decode_tiles(priors, shapes, payloads, tile)
    assert_codes_equal(batched, codes)
    for t, payload in zip(tiles, payloads):
        own = [c[:, t.window(lv)[0], t.window(lv)[1]] for lv, c in enumerate(codes)]
        assert encode_tiles(priors, own, tile) == [payload]  # the encoder does not depend on the batch either
        single = decode_tiles(priors, code_shapes(own), [payload], tile)
        assert_codes_equal(single, own)
        assert_codes_equal([b[:, t.window(lv)[0], t.window(lv)[1]] for lv, b in enumerate(batched)], single)


@pytest.mark.parametrize("tile", [32, 8])
def test_coded_size_is_close_to_cross_entropy(model, tile):
    codes = image_codes(model, smooth_image(64, 96, seed=51))
    bits, ce, n_tiles = coded_bits_and_cross_entropy(model, codes, tile)
    assert bits <= 1.005 * ce + 64 * n_tiles, f"{bits} payload bits for {ce:.1f} bits of cross-entropy"
    assert bits >= 0.98 * ce  # a coder cannot beat its model by much: guards the measurement itself


def test_coded_size_three_levels(model3):
    codes = image_codes(model3, smooth_image(48, 64, seed=52))
    bits, ce, n_tiles = coded_bits_and_cross_entropy(model3, codes, 8)
    assert 0.98 * ce <= bits <= 1.005 * ce + 64 * n_tiles


# --- the range coder ---------------------------------------------------------------------------


def test_invalid_range_coder_data_is_a_vqcodec_error():
    """constriction reports some invalid streams with an AssertionError (found by
    benchmarks/fuzz_codec.py); the decoder must turn every such failure into VQCodecError."""
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(200):
        probs = torch.from_numpy(rng.random((1, 4, 512)) ** 8 * 2**20 + 1)  # a step of 4 positions
        words = rng.integers(0, 2**32, size=int(rng.integers(1, 4)), dtype=np.uint64).astype("<u4")
        decoders = TileDecoders([words.tobytes()])
        try:
            for _ in range(50):
                decoders.decode(probs)
        except VQCodecError:
            refused += 1
    assert refused > 0


# --- bounds that keep untrusted files from allocating (issue 12) ----------------------------------------------


def test_salvage_keeps_the_tiles_before_the_cut_of_a_truncated_file() -> None:
    data = raw(tiles=(b"abcd", b"efgh", b"ijkl"))
    with pytest.raises(VQCodecError, match="truncated"):
        unpack(data[:-1])
    stream = unpack(data[:-1], salvage=True)
    assert stream.damaged == (2,) and stream.tiles == (b"abcd", b"efgh", b"ijk")
    assert unpack(data[:-5], salvage=True).damaged == (1, 2)
    with pytest.raises(VQCodecError, match="truncated"):  # a header cut off is never salvaged
        unpack(data[:20], salvage=True)
    with pytest.raises(VQCodecError, match="trailing garbage"):
        unpack(data + b"x", salvage=True)


def test_min_bits_per_code_is_below_what_the_range_coder_writes(model) -> None:
    """The short-payload check refuses a tile of n codes in w words when n * min_bits_per_code > 32 w;
    n codes of the likeliest symbol under the shipped prior's sharpest distribution (2**20 against 1
    for every other code) must never be coded in fewer words than that."""
    from vqcodec import codec as codec_module
    from vqcodec.coding.range_coder import encode_symbols

    bits = codec_module.min_bits_per_code(model.priors[0])
    assert 0.0007 < bits < 0.000704  # -log2(2**20 / (2**20 + 511)), less two units of 2**-24
    probs = np.ones(512)
    probs[0] = 2.0**20
    for n in (1, 100, 10_000, 45_000, 46_000, 100_000, 500_000):
        words = len(encode_symbols([(np.zeros(n, np.int32), torch.from_numpy(np.tile(probs, (n, 1))))])) // 4
        assert n * bits < 32 * words, (n, words)


def test_a_huge_claim_is_a_valid_container_the_codec_must_refuse() -> None:
    """The fuzzers' new mutations: a consistent container claiming a huge image, and lengths that disagree."""
    from vqcodec.testing import huge_claim, lengths_mutation, pack_with_lengths, tile_count

    data = pack(Bitstream(header(width=64, height=48, tile_size=4), (b"\x00" * 4,) * tile_count(64, 48, 2, 4)))
    crafted = huge_claim(data, 32768, 32768)
    assert len(crafted) == 7206 and len(unpack(crafted).tiles) == 1024
    stream = unpack(data)
    assert pack_with_lengths(stream, [len(t) for t in stream.tiles]) == data
    rng = random.Random(0)
    for _ in range(50):
        try:
            unpack(lengths_mutation(rng, data))
        except VQCodecError:
            pass


@pytest.mark.slow
def test_rate_aware_bottom_codes_cost_fewer_bits_decode_exactly_and_ignore_threads(model):
    """``compress(rdo=...)``: the bottom codes weigh bits against distance. The file is smaller than
    with the nearest codes, decodes to exactly the codes chosen, and is the same on 1 and 2 threads;
    the codes above the bottom are the nearest ones either way."""
    from vqcodec.codec import compress, decompress

    pixels = smooth_image(96, 128, seed=61)
    nearest = compress(pixels, model)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = compress(pixels, model, rdo=0.05)
        torch.set_num_threads(2)
        two = compress(pixels, model, rdo=0.05)
    finally:
        torch.set_num_threads(before)
    assert one == two and len(one) < len(nearest)
    head = unpack(one).header
    decoded = decode_tiles(model.priors, model.vqvae.code_shapes(96, 128), list(unpack(one).tiles), head.tile_size,
                           order=head.symbol_order)
    chosen = image_codes(model, pixels, rdo=0.05)
    assert_codes_equal(decoded, chosen)
    assert torch.equal(chosen[1], image_codes(model, pixels)[1])
    assert decompress(one, model).shape == pixels.shape
    assert compress(pixels, model, rdo=0) == nearest


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.02", True])
def test_a_bad_rdo_weight_is_refused(model, bad):
    from vqcodec.codec import compress

    with pytest.raises(VQCodecError, match="rdo"):
        compress(smooth_image(16, 16, seed=1), model, rdo=bad)
