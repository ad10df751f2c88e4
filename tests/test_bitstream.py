"""Tests for the `.vqc` container (``vqcodec.coding.bitstream``, specified in docs/bitstream.md): round
trips of every format version, the exact byte layout (the examples of docs/bitstream.md, hand-assembled
here independently of the module), canonical encoding, every refusal, the code checksums of format
version 5 (their table, their serialization of a tile's codes, what pack and unpack do with them),
the files of version 4 and earlier still parsing, and fuzzing.

The codec's side of the code checksums (a decoder that decodes other codes than the encoder coded)
is tested in tests/test_codec.py."""

from __future__ import annotations

import binascii
import dataclasses
import random
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vqcodec.coding.bitstream import (
    CODE_CHECKSUM_VERSION,
    FORMAT_VERSION,
    MAGIC,
    MAX_PIXELS,
    MAX_SIDE,
    READABLE_VERSIONS,
    Bitstream,
    Header,
    code_bytes,
    code_checksum,
    pack,
    read_header,
    tile_checksum,
    unpack,
)
from vqcodec.coding.tile_codec import tile_code_checksums
from vqcodec.errors import VQCodecError

FP = bytes(range(16))
DATA = Path(__file__).resolve().parent / "data"


def header(**overrides: object) -> Header:
    fields: dict[str, object] = dict(
        model_fingerprint=FP, width=768, height=512, channels=3, bit_depth=8, levels=2, tile_size=16
    )
    fields.update(overrides)
    return Header(**fields)  # type: ignore[arg-type]


def code_sums(n: int) -> tuple[int, ...]:
    """Arbitrary code checksums for ``n`` tiles (the container does not know the codes)."""
    return tuple((0xC0DE + 0x1111 * i) & 0xFFFF for i in range(n))


def stream(head: Header, tiles: tuple[bytes, ...]) -> Bitstream:
    """A valid stream of ``head``'s version: with code checksums from version 5, without before."""
    sums = code_sums(len(tiles)) if head.version >= CODE_CHECKSUM_VERSION else None
    return Bitstream(head, tiles, code_checksums=sums)


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
    code_table: tuple[int, ...] | None = None,
    icc: bytes | None = None,
    header_crc: int | None = None,
    tail: bytes = b"",
) -> bytes:
    """Hand-assemble a file with arbitrary field values and (by default) correct checksums; from
    version 5 the code checksum table holds ``code_table`` (default ``code_sums``)."""
    head = magic + bytes((version, flags)) + FP + width + height + fields
    head += leb128(len(tiles)) if tile_count is None else tile_count
    head += b"".join(leb128(len(t)) for t in tiles) if lengths is None else lengths
    crcs = [binascii.crc_hqx(t, 0) for t in tiles] if checksums is None else checksums
    head += b"".join(struct.pack("<H", c) for c in crcs)
    if version >= 5 or code_table is not None:
        head += b"".join(struct.pack("<H", c) for c in (code_sums(len(tiles)) if code_table is None else code_table))
    if icc is not None:
        head += leb128(len(icc)) + icc
    head += struct.pack("<I", zlib.crc32(head) if header_crc is None else header_crc)
    return head + b"".join(tiles) + tail


def as_version(data: bytes, version: int) -> bytes:
    """The same payloads under a header of another version (pack leaves the code checksums out before 5)."""
    s = unpack(data)
    return pack(dataclasses.replace(s, header=dataclasses.replace(s.header, version=version)))


# --- the container: round trips -------------------------------------------------------------------------------

STREAMS = [
    (header(), (b"\x01\x02\x03",)),
    (header(icc_profile=b"\x00" * 3144), (b"a" * 300, b"", b"b" * 20000)),
    (header(width=1, height=1, channels=1, bit_depth=16, levels=3, tile_size=4), (b"",)),
    (header(width=MAX_SIDE, height=MAX_PIXELS // MAX_SIDE, tile_size=256, model_fingerprint=FP[::-1]),
     tuple(bytes([i % 256]) * (i * 7) for i in range(200))),
    (header(width=300, height=3, coded_size=(150, 2), icc_profile=b"ICC"), (b"ab", b"")),
]


@pytest.mark.parametrize("version", READABLE_VERSIONS)
@pytest.mark.parametrize("case", range(len(STREAMS)))
def test_round_trip(case: int, version: int) -> None:
    head, tiles = STREAMS[case]
    if head.coded_size and version < 3:
        head = dataclasses.replace(head, coded_size=None)
    s = stream(dataclasses.replace(head, version=version), tiles)
    data = pack(s)
    assert unpack(data) == s
    assert read_header(data) == s.header
    assert pack(unpack(data)) == data  # canonical
    assert unpack(bytearray(data)) == s
    assert data[4] == version
    # version 5 is version 4 plus two bytes a tile (the code checksum table), and the header CRC
    if version == 5:
        v4 = as_version(data, 4)
        assert len(data) == len(v4) + 2 * len(tiles) and unpack(v4).code_checksums is None


def test_exact_layout_with_icc() -> None:
    """The example of docs/bitstream.md, as version 1 (version 2: only that byte and the CRC differ)."""
    s = Bitstream(header(width=300, height=3, icc_profile=b"ICC", version=1), (b"ab", b""))
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
    assert pack(s) == expected
    assert unpack(expected) == s
    v2 = pack(dataclasses.replace(s, header=dataclasses.replace(s.header, version=2)))
    crc_at = len(expected) - len(b"ab") - 4
    assert v2[4] == 2 and {i for i in range(len(v2)) if v2[i] != expected[i]} <= {4, *range(crc_at, crc_at + 4)}
    assert unpack(v2).header.version == 2 and unpack(v2).header.symbol_order == "fast"
    assert unpack(expected).header.symbol_order == "raster"
    # as version 5: the code checksum table (here 0x1234 and 0xabcd) right after the payload checksums
    v5 = pack(Bitstream(dataclasses.replace(s.header, version=5), s.tiles, code_checksums=(0x1234, 0xABCD)))
    table_at = crc_at - 4  # after the payload CRC-16s, before the ICC length + "ICC" and the header CRC
    assert v5[4] == 5 and v5[table_at : table_at + 4] == bytes.fromhex("34 12 cd ab")
    assert v5[:4] + v5[5:table_at] == expected[:4] + expected[5:table_at]
    assert v5[table_at + 4 : -6] == expected[table_at:-6] == bytes.fromhex("03 49 43 43")
    assert v5[-6:] == struct.pack("<I", zlib.crc32(v5[:-6])) + b"ab"


def test_exact_layout_without_icc() -> None:
    s = Bitstream(
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
    assert pack(s) == expected


# The version-5 example of docs/bitstream.md: a 32x8 image of a 2-level model in tiles of 4 bottom codes,
# so its code maps are 1x4 (top) and 2x8 (bottom) and it has two tiles of 1x2 top and 2x4 bottom codes.
EXAMPLE_TOP = torch.tensor([[[1, 2, 300, 511]]])
EXAMPLE_BOTTOM = torch.arange(16).reshape(1, 2, 8)
EXAMPLE_V5 = bytes.fromhex(
    "56 51 43 89"  # magic
    "05"  # format version 5
    "00"  # flags: none
    "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"  # model fingerprint
    "20 08"  # width 32, height 8
    "03 08 02 02"  # channels 3, bit depth 8, levels 2, tile 2**2 = 4
    "02"  # 2 tiles
    "02 00"  # tile lengths 2 and 0
    "ff 74 00 00"  # payload CRC-16s: 0x74ff ("ab"), 0x0000 ("")
    "dd eb 76 95"  # code CRC-16s: 0xebdd (tile 0's codes), 0x9576 (tile 1's)
    "05 2a 83 3a"  # header CRC32 (0x3a832a05)
    "61 62"  # payloads "ab" + ""
)


def test_exact_layout_version_5() -> None:
    """Each tile's code checksum: the CRC-16 of its codes, top level first, each level's window of the
    tile in raster order, each code u16le (worked out by hand in docs/bitstream.md)."""
    tile0 = bytes.fromhex("01 00 02 00" "00 00 01 00 02 00 03 00 08 00 09 00 0a 00 0b 00")
    tile1 = bytes.fromhex("2c 01 ff 01" "04 00 05 00 06 00 07 00 0c 00 0d 00 0e 00 0f 00")
    assert (binascii.crc_hqx(tile0, 0), binascii.crc_hqx(tile1, 0)) == (0xEBDD, 0x9576)
    top, bottom = EXAMPLE_TOP[0].numpy(), EXAMPLE_BOTTOM[0].numpy()
    assert code_bytes([top[:, :2], bottom[:, :4]]) == tile0 and code_bytes([top[:, 2:], bottom[:, 4:]]) == tile1
    assert code_checksum([top[:, :2], bottom[:, :4]]) == 0xEBDD
    # the codec's per-tile checksums of the maps (bottom first, as the codec holds them)
    assert tile_code_checksums([EXAMPLE_BOTTOM, EXAMPLE_TOP], 4) == {0: 0xEBDD, 1: 0x9576}
    assert tile_code_checksums([EXAMPLE_BOTTOM, EXAMPLE_TOP], 4, only={1}) == {1: 0x9576}

    s = Bitstream(header(width=32, height=8, tile_size=4), (b"ab", b""), code_checksums=(0xEBDD, 0x9576))
    assert s.header.version == 5 and s.header.has_code_checksums and s.header.banded
    assert pack(s) == EXAMPLE_V5 and len(EXAMPLE_V5) == 45
    assert unpack(EXAMPLE_V5) == s and read_header(EXAMPLE_V5) == s.header
    assert zlib.crc32(EXAMPLE_V5[:-6]) == 0x3A832A05
    # version 4 of the same stream: no table, 4 bytes fewer; what it reads back has no code checksums
    v4 = as_version(EXAMPLE_V5, 4)
    assert len(v4) == 41 and v4[4] == 4 and v4[:4] + v4[5:35] == EXAMPLE_V5[:4] + EXAMPLE_V5[5:35]
    assert unpack(v4).code_checksums is None and not unpack(v4).header.has_code_checksums


def test_code_serialization() -> None:
    """u16 little-endian, raster order, levels in the order given; empty windows add nothing; codes
    outside 0..65535 and windows that are not 2-D are refused."""
    assert code_bytes([np.array([[1, 0x1234]]), np.array([[0xFFFF], [0]])]) == bytes.fromhex("01 00 34 12 ff ff 00 00")
    assert code_bytes([np.zeros((0, 3), np.int64)]) == b"" and code_checksum([]) == 0
    assert code_checksum([np.array([[1]]), np.array([[2]])]) != code_checksum([np.array([[2]]), np.array([[1]])])
    assert code_bytes([torch.tensor([[7, 8]])]) == bytes.fromhex("07 00 08 00")  # tensors too
    for bad in ([np.array([[65536]])], [np.array([[-1]])], [np.array([1, 2])]):
        with pytest.raises(VQCodecError):
            code_bytes(bad)


def test_tile_checksum_is_crc16_ccitt() -> None:
    assert tile_checksum(b"123456789") == 0x31C3  # the CRC-16/XMODEM check value
    assert tile_checksum(b"") == 0


def test_overhead_is_small() -> None:
    tiles = tuple(bytes(417) for _ in range(24))  # ~10 kB in 24 tiles
    overhead = len(pack(stream(header(), tiles))) - sum(map(len, tiles))
    assert overhead == 35 + 24 * (2 + 2 + 2)  # a 2-byte length, a 2-byte payload and a 2-byte code checksum per tile
    overhead = len(pack(stream(header(version=4), tiles))) - sum(map(len, tiles))
    assert overhead == 35 + 24 * (2 + 2)


# --- the code checksums of version 5 ----------------------------------------------------------------------


def test_a_version_5_stream_needs_one_code_checksum_per_tile() -> None:
    with pytest.raises(VQCodecError, match=r"^a version-5 stream needs the checksum of each tile's codes"):
        pack(Bitstream(header(), (b"a", b"b")))
    for bad in ((1,), (1, 2, 3), ()):
        with pytest.raises(VQCodecError, match=r"a bitstream of 2 tiles needs 2 code checksums, not \d"):
            Bitstream(header(), (b"a", b"b"), code_checksums=bad)
    for bad in ([1, 2], (1, 1 << 16), (-1, 0), (True, 0), (1.0, 0)):
        with pytest.raises(VQCodecError, match="code_checksums must be a tuple of 16-bit checksums"):
            Bitstream(header(), (b"a", b"b"), code_checksums=bad)  # type: ignore[arg-type]
    # before version 5 there is no table: pack leaves the checksums out, unpack gives None
    old = Bitstream(header(version=4), (b"a", b"b"), code_checksums=(1, 2))
    assert pack(old) == pack(dataclasses.replace(old, code_checksums=None))
    assert unpack(pack(old)).code_checksums is None


def test_a_version_5_file_with_a_wrong_code_table_is_refused() -> None:
    """The table's length follows from the tile count; one entry more or fewer (header CRC right) shifts
    everything after it, and the file is refused. A tile count that leaves no room for the table is
    refused before any table is read (5 header bytes a tile in version 5, not 3)."""
    assert unpack(raw(code_table=(7, 8))).code_checksums == (7, 8)
    for table in ((7,), (7, 8, 9), ()):
        with pytest.raises(VQCodecError):
            unpack(raw(code_table=table))
        with pytest.raises(VQCodecError):
            unpack(raw(code_table=table, icc=b"ICC", flags=0x01))
    # 19 bytes follow the tile count of raw(): room for 6 tiles at 3 bytes each, but not 4 tiles at 5
    refused(raw(tile_count=leb128(4)), "tile count 4 cannot fit")
    with pytest.raises(VQCodecError) as err:
        unpack(raw(version=4, tile_count=leb128(4)))
    assert "cannot fit" not in str(err.value)  # 4 tiles pass version 4's bound (3 bytes each)


def test_code_table_is_under_the_header_crc() -> None:
    data = bytearray(raw())
    table_at = len(data) - 5 - 4 - 4  # payloads "abc" + "de", header CRC, the 2-entry table
    assert data[table_at : table_at + 4] == b"".join(struct.pack("<H", c) for c in code_sums(2))
    data[table_at] ^= 0x01
    refused(bytes(data), "^header is corrupted")
    with pytest.raises(VQCodecError, match="^header is corrupted"):  # never salvaged
        unpack(bytes(data), salvage=True)


def test_salvage_keeps_the_code_checksums() -> None:
    data = bytearray(raw(tiles=(b"tile-0", b"tile-1")))
    data[-1] ^= 0x01  # tile 1's payload
    s = unpack(bytes(data), salvage=True)
    assert s.damaged == (1,) and s.code_checksums == code_sums(2)


# --- earlier versions stay readable -----------------------------------------------------------------------


def test_version_4_files_still_parse() -> None:
    """Files of version 4 (no code checksums), the golden files of every version among them, parse and
    re-pack to the same bytes; only version 5 has code checksums."""
    assert unpack(raw(version=4)).code_checksums is None and unpack(raw(version=4)).tiles == (b"abc", b"de")
    files = sorted(DATA.glob("golden*.vqc")) + sorted((DATA / "ladder").glob("*.vqc"))
    versions = set()
    for path in files:
        data = path.read_bytes()
        s = unpack(data)
        versions.add(s.header.version)
        assert pack(s) == data, path.name
        assert (s.code_checksums is None) == (s.header.version < 5), path.name
        if s.code_checksums is not None:
            assert len(s.code_checksums) == len(s.tiles)
    assert versions == set(READABLE_VERSIONS)


# --- refusals ----------------------------------------------------------------------------------


def refused(data: bytes, match: str) -> None:
    with pytest.raises(VQCodecError, match=match):
        unpack(data)
    with pytest.raises(VQCodecError, match=match):
        read_header(data)


def test_helper_builds_a_valid_file() -> None:
    assert unpack(raw()).tiles == (b"abc", b"de")
    assert unpack(raw()) == stream(header(width=64, height=48, tile_size=16), (b"abc", b"de"))


@pytest.mark.parametrize("data", [b"", b"V", b"VQC", MAGIC, MAGIC + b"\x01", raw()[:30], raw()[:-1]])
def test_truncated(data: bytes) -> None:
    refused(data, "truncated")


def test_truncated_inside_the_code_table() -> None:
    tiles = (b"a" * 20000, b"b" * 20000)  # 3-byte lengths: the tile count's bound lets the cut reach the table
    data = raw(tiles=tiles)
    table_at = len(MAGIC) + 2 + len(FP) + 2 + 4 + 1 + 6 + 4
    assert data[table_at : table_at + 4] == b"".join(struct.pack("<H", c) for c in code_sums(2))
    refused(data[: table_at + 1], "it ends inside the code checksum table")
    refused(data[: table_at + 3], "it ends inside the code checksum table")


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n", b"hello world", b"X", raw(magic=b"VQC\x88")])
def test_bad_magic(data: bytes) -> None:
    refused(data, "^not a vqcodec file")


def test_newer_version() -> None:
    refused(raw(version=6),
            r"^written by a newer vqcodec \(format version 6\); this one reads versions 1, 2, 3, 4 and 5\.$")


@pytest.mark.parametrize("version", [3, 4, 5])
def test_versions_3_to_5_add_the_coded_size(version) -> None:
    """Flag bit 1 (from version 3): two varints after the height, the size the codes describe.
    Version 4 has version 3's layout; only the decoder's windows differ (``Header.banded``); version 5
    adds the code checksums."""
    plain = Bitstream(header(width=300, height=3, version=version), (b"ab",))
    assert plain.header.coded_width == 300 and plain.header.coded_height == 3
    s = stream(header(width=300, height=3, coded_size=(150, 2), version=version), (b"ab",))
    assert (s.header.coded_width, s.header.coded_height) == (150, 2)
    assert s.header.banded == (version >= 4) and s.header.symbol_order == "fast"
    data = pack(s)
    expected = raw(version=version, flags=0x02, width=leb128(300) + leb128(3) + leb128(150), height=leb128(2),
                   fields=bytes((3, 8, 2, 4)), tiles=(b"ab",))
    assert data == expected and data[5] == 0x02 and data[22:27] == bytes.fromhex("ac 02 03 96 01")
    assert unpack(data) == s and pack(unpack(data)) == data
    with_icc = stream(header(coded_size=(1, 1), icc_profile=b"ICC", version=version), (b"",))
    assert unpack(pack(with_icc)) == with_icc and pack(with_icc)[5] == 0x03


def test_new_files_are_version_5() -> None:
    """What vqcodec writes: version 5, with or without a coded size; versions 1 to 4 stay readable."""
    assert FORMAT_VERSION == CODE_CHECKSUM_VERSION == 5 and READABLE_VERSIONS == (1, 2, 3, 4, 5)
    assert header().version == 5 and header(coded_size=(5, 5)).version == 5 and header().banded
    assert header().has_code_checksums
    assert not any(header(version=v).banded for v in (1, 2, 3))
    assert not any(header(version=v).has_code_checksums for v in (1, 2, 3, 4))


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
    refused(raw(version=5, flags=0x04), "unknown flags 0x04; the file is not valid version 5")
    refused(raw(version=3, flags=0x02, width=leb128(64) + leb128(48) + leb128(64), height=leb128(48)),
            "equals the image size")


def test_readable_versions_parse_and_others_cannot_be_written() -> None:
    for version in (1, 2, 3, 4, 5):
        assert unpack(raw(version=version)).header.version == version
    for version in (0, 6, True):
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
    s = unpack(bytes(data), salvage=True)
    assert s.damaged == (2, 3)
    assert s.tiles[:2] == tiles[:2] and s.tiles[2:] != tiles[2:]  # damaged bytes as found
    with pytest.raises(VQCodecError, match=r"^payloads of 2 tiles \(2, 3\) are corrupted"):
        unpack(bytes(data))
    assert pack(s) != bytes(data)  # pack writes checksums for the tiles as they are now
    assert unpack(pack(s)).damaged == ()
    assert unpack(raw(tiles=tiles), salvage=True) == unpack(raw(tiles=tiles))
    assert unpack(raw(tiles=tiles)) == Bitstream(unpack(raw(tiles=tiles)).header, tiles, code_checksums=code_sums(4))
    with pytest.raises(VQCodecError, match="^header is corrupted"):  # structure errors stay errors
        unpack(raw(tiles=tiles, header_crc=0), salvage=True)
    with pytest.raises(VQCodecError, match="trailing garbage"):
        unpack(raw(tiles=tiles, tail=b"x"), salvage=True)


def test_salvage_keeps_the_tiles_before_the_cut_of_a_truncated_file() -> None:
    data = raw(tiles=(b"abcd", b"efgh", b"ijkl"))
    with pytest.raises(VQCodecError, match="truncated"):
        unpack(data[:-1])
    s = unpack(data[:-1], salvage=True)
    assert s.damaged == (2,) and s.tiles == (b"abcd", b"efgh", b"ijk")
    assert unpack(data[:-5], salvage=True).damaged == (1, 2)
    with pytest.raises(VQCodecError, match="truncated"):  # a header cut off is never salvaged
        unpack(data[:20], salvage=True)
    with pytest.raises(VQCodecError, match="trailing garbage"):
        unpack(data + b"x", salvage=True)


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


def test_a_huge_claim_is_a_valid_container_the_codec_must_refuse(model) -> None:
    """The fuzzers' crafted files (``vqcodec.testing``): a consistent container claiming a huge image, and tile
    lengths that disagree with the payloads. The container takes the first and every moved boundary between
    two tiles (all its checksums are right), and refuses every length that disagrees with the file's size; the
    codec refuses all of them."""
    from vqcodec.codec import compress, decompress
    from vqcodec.testing import huge_claim, lengths_mutation, pack_with_lengths, smooth_image, tile_count

    n = tile_count(64, 48, 2, 4)
    data = pack(Bitstream(header(width=64, height=48, tile_size=4), (b"\x00" * 4,) * n, code_checksums=code_sums(n)))
    crafted = huge_claim(data, 32768, 32768)
    assert len(crafted) == 7206 + 2 * 1024 and len(unpack(crafted).tiles) == 1024  # 2 bytes a tile more than v4
    assert len(huge_claim(as_version(data, 4), 32768, 32768)) == 7206  # the audit's file (issue 12)
    claim = unpack(crafted)
    assert (claim.header.width, claim.header.height, claim.header.tile_size) == (32768, 32768, 256)
    assert claim.tiles == (b"\x00" * 4,) * 1024 and claim.damaged == () and claim.header.model_fingerprint == FP
    s = unpack(data)
    assert pack_with_lengths(s, [len(t) for t in s.tiles]) == data
    assert pack_with_lengths(unpack(as_version(data, 4)), [len(t) for t in s.tiles]) == as_version(data, 4)

    real = compress(smooth_image(32, 64, seed=3), model, tile=4)  # 2 x 4 tiles of the shipped model
    with pytest.raises(VQCodecError, match=r"32768x32768 image .* over the limit"):
        decompress(huge_claim(real, 32768, 32768), model)
    with pytest.raises(VQCodecError, match=r"too short for its codes"):
        decompress(huge_claim(real, 32768, 32768), model, max_pixels=1 << 30)
    intact = unpack(real)
    rng = random.Random(0)
    seen = {"moved": 0, "refused": 0, "unchanged": 0}
    for _ in range(40):
        mutated = lengths_mutation(rng, real)
        try:
            got = unpack(mutated)
        except VQCodecError as err:
            assert re.search(r"truncated|trailing garbage", str(err)), err
            seen["refused"] += 1
            continue
        if mutated == real:  # the boundary "moved" to where it was
            seen["unchanged"] += 1
            continue
        assert got.header == intact.header and got.damaged == () and len(got.tiles) == len(intact.tiles)
        assert b"".join(got.tiles) == b"".join(intact.tiles) and got.tiles != intact.tiles  # a boundary moved
        with pytest.raises(VQCodecError):
            decompress(mutated, model)
        seen["moved"] += 1
    assert seen["moved"] >= 5 and seen["refused"] >= 5, seen


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


@pytest.mark.parametrize("version", [4, 5])
def test_fuzz_mutations_and_truncations(version: int) -> None:
    rng = random.Random(20240611)
    s = stream(header(icc_profile=b"icc-profile", version=version),
               (b"tile-0" * 30, b"", b"t2", rng.randbytes(200)))
    data = pack(s)
    header_end = len(data) - sum(map(len, s.tiles)) - 4
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
