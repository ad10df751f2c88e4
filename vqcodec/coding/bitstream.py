"""The versioned `.vqc` container: header (with a CRC-16 per tile and a CRC32 over it all), payloads.

The byte layout is specified in docs/bitstream.md; change it only together with that file,
FORMAT_VERSION and the exact-layout test. Parsing treats the input as hostile: every read is
bounds-checked, sizes are checked before anything is sliced, and every failure is a VQCodecError.
The encoding is canonical (minimal varints, no unknown flags), so pack(unpack(b)) == b.
Each tile payload has its own checksum, so a damaged tile can be reported (or, with salvage=True,
skipped) without condemning the others. From version 5 the header also holds a checksum of each
tile's decoded codes (``code_checksum``), which the codec checks after decoding: a wrong model, or a
probability that differs by one unit, decodes to other codes and is reported instead of shown.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vqcodec.errors import VQCodecError

MAGIC = b"VQC\x89"  # the non-ASCII last byte makes the file non-text and exposes 7-bit mangling
FORMAT_VERSION = 5  # what vqcodec writes
RESAMPLED_VERSION = 3  # the first version with a coded size (a file coded at another resolution)
BANDED_VERSION = 4  # the first version whose pixels are decoded in bands (``vqvae.band_windows``)
CODE_CHECKSUM_VERSION = 5  # the first version with a checksum of each tile's decoded codes
# 1: raster order; 2: each level in its prior's order; 3: 2 + coded size; 4: 3 + bands; 5: 4 + code checksums
READABLE_VERSIONS = (1, 2, 3, 4, 5)
MAX_PIXELS = 1 << 30  # refuse absurd sizes before anyone allocates width * height
MAX_SIDE = 1 << 17

FINGERPRINT_SIZE = 16
FLAG_ICC = 0x01
FLAG_RESAMPLED = 0x02  # version 3: the codes describe the image at another size (coded width, height)
_KNOWN_FLAGS = {1: FLAG_ICC, 2: FLAG_ICC, 3: FLAG_ICC | FLAG_RESAMPLED, 4: FLAG_ICC | FLAG_RESAMPLED,
                5: FLAG_ICC | FLAG_RESAMPLED}
_MAX_VARINT_BYTES = 10  # enough for any value below 2**64
_CRC = struct.Struct("<I")
_TILE_CRC = struct.Struct("<H")
_TILE_SIZES = {1 << k: k for k in range(2, 9)}  # tile side -> its log2, 4..256


@dataclass(frozen=True)
class Header:
    """What a decoder needs before touching the payloads; validated on construction."""

    model_fingerprint: bytes  # exactly 16 bytes (truncated SHA-256 of the model's weights)
    width: int  # pixels, >= 1
    height: int
    channels: int  # 1 or 3
    bit_depth: int  # 8 or 16
    levels: int  # 2 or 3 code-map levels
    tile_size: int  # tile side in bottom-level codes (a power of two, 4..256)
    icc_profile: bytes | None = None
    version: int = FORMAT_VERSION  # decides the order of the symbols and the decoder's windows
    coded_size: tuple[int, int] | None = None  # (width, height) the codes were made at, if not the image's

    @property
    def coded_width(self) -> int:
        """Width of the image the code maps describe (the decoder resamples it to ``width``)."""
        return self.coded_size[0] if self.coded_size else self.width

    @property
    def coded_height(self) -> int:
        return self.coded_size[1] if self.coded_size else self.height

    @property
    def symbol_order(self) -> str:
        """The decoding order (``priors.contract``) the payloads were written in."""
        return "raster" if self.version == 1 else "fast"

    @property
    def banded(self) -> bool:
        """Whether the VQ-VAE decodes the image in the bands of ``vqvae.band_windows`` (version 4),
        not whole (earlier versions): the pixels differ in the last float bits, so the file says."""
        return self.version >= BANDED_VERSION

    @property
    def has_code_checksums(self) -> bool:
        """Whether the file records a checksum of each tile's decoded codes (version 5 and later)."""
        return self.version >= CODE_CHECKSUM_VERSION

    def __post_init__(self) -> None:
        _validate_header(self)


@dataclass(frozen=True)
class Bitstream:
    """A header plus one range-coder payload per tile, tiles in raster order.

    ``damaged`` lists the tiles whose payload failed its checksum; only unpack(..., salvage=True)
    sets it, and pack ignores it (it always writes the checksums of the tiles as they are).
    ``code_checksums`` holds one ``code_checksum`` per tile, of the codes the encoder coded in it:
    version 5 records them (pack refuses a version-5 stream without them); earlier versions have none
    (unpack gives None, and pack leaves them out, so a stream converts to an older version by its
    header's version alone)."""

    header: Header
    tiles: tuple[bytes, ...]
    damaged: tuple[int, ...] = ()
    code_checksums: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise VQCodecError("Bitstream.header must be a Header.")
        if not isinstance(self.tiles, tuple) or not all(isinstance(t, bytes) for t in self.tiles):
            raise VQCodecError("Bitstream.tiles must be a tuple of bytes objects.")
        if not self.tiles:
            raise VQCodecError("a bitstream needs at least one tile.")
        if not isinstance(self.damaged, tuple) or not all(
            _is_int(k) and 0 <= k < len(self.tiles) for k in self.damaged
        ):
            raise VQCodecError("Bitstream.damaged must be a tuple of tile indices.")
        sums = self.code_checksums
        if sums is not None and (not isinstance(sums, tuple) or not all(_is_int(c) and 0 <= c <= 0xFFFF for c in sums)):
            raise VQCodecError("Bitstream.code_checksums must be a tuple of 16-bit checksums, or None.")
        if sums is not None and len(sums) != len(self.tiles):
            raise VQCodecError(f"a bitstream of {len(self.tiles)} tiles needs {len(self.tiles)} code checksums, "
                               f"not {len(sums)}.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_header(h: Header) -> None:
    """Refuse headers that could not describe a real image, on write and on read alike."""
    if not _is_int(h.version) or h.version not in READABLE_VERSIONS:
        raise VQCodecError(f"format version must be one of {READABLE_VERSIONS}, got {h.version!r}.")
    if not isinstance(h.model_fingerprint, bytes) or len(h.model_fingerprint) != FINGERPRINT_SIZE:
        raise VQCodecError(f"model fingerprint must be exactly {FINGERPRINT_SIZE} bytes.")
    for name, side in (("width", h.width), ("height", h.height)):
        if not _is_int(side) or side < 1:
            raise VQCodecError(f"image {name} must be a positive integer, got {side!r}.")
        if side > MAX_SIDE:
            raise VQCodecError(f"image {name} {side} exceeds the maximum of {MAX_SIDE} pixels.")
    if h.width * h.height > MAX_PIXELS:
        raise VQCodecError(
            f"image of {h.width}x{h.height} pixels exceeds the maximum of {MAX_PIXELS} pixels."
        )
    if not _is_int(h.channels) or h.channels not in (1, 3):
        raise VQCodecError(f"channel count must be 1 or 3, got {h.channels!r}.")
    if not _is_int(h.bit_depth) or h.bit_depth not in (8, 16):
        raise VQCodecError(f"bit depth must be 8 or 16, got {h.bit_depth!r}.")
    if not _is_int(h.levels) or h.levels not in (2, 3):
        raise VQCodecError(f"code-map levels must be 2 or 3, got {h.levels!r}.")
    if not _is_int(h.tile_size) or h.tile_size not in _TILE_SIZES:
        raise VQCodecError(f"tile size must be a power of two from 4 to 256, got {h.tile_size!r}.")
    if h.icc_profile is not None and (not isinstance(h.icc_profile, bytes) or not h.icc_profile):
        raise VQCodecError("ICC profile must be non-empty bytes, or None when there is none.")
    if h.coded_size is not None:
        _validate_coded_size(h)


def _validate_coded_size(h: Header) -> None:
    if h.version < RESAMPLED_VERSION:
        raise VQCodecError(f"a coded size needs format version {RESAMPLED_VERSION} or later, not {h.version}.")
    if not isinstance(h.coded_size, tuple) or len(h.coded_size) != 2:
        raise VQCodecError(f"coded size must be (width, height), got {h.coded_size!r}.")
    cw, ch = h.coded_size
    for name, side in (("coded width", cw), ("coded height", ch)):
        if not _is_int(side) or not 1 <= side <= MAX_SIDE:
            raise VQCodecError(f"{name} must be an integer from 1 to {MAX_SIDE}, got {side!r}.")
    if cw * ch > MAX_PIXELS:
        raise VQCodecError(f"coded size {cw}x{ch} exceeds the maximum of {MAX_PIXELS} pixels.")
    if (cw, ch) == (h.width, h.height):  # canonical: the flag only when the sizes differ
        raise VQCodecError("the coded size equals the image size; leave it out.")


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant first, high bit = more follows."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def pack(stream: Bitstream) -> bytes:
    """Serialize a bitstream; the header was validated when it was built."""
    h = stream.header
    flags = (FLAG_ICC if h.icc_profile is not None else 0) | (FLAG_RESAMPLED if h.coded_size else 0)
    head = bytearray(MAGIC)
    head += bytes((h.version, flags))
    head += h.model_fingerprint
    head += _varint(h.width) + _varint(h.height)
    if h.coded_size:
        head += _varint(h.coded_size[0]) + _varint(h.coded_size[1])
    head += bytes((h.channels, h.bit_depth, h.levels, _TILE_SIZES[h.tile_size]))
    head += _varint(len(stream.tiles))
    for tile in stream.tiles:
        head += _varint(len(tile))
    for tile in stream.tiles:
        head += _TILE_CRC.pack(tile_checksum(tile))
    if h.has_code_checksums:
        if stream.code_checksums is None:
            raise VQCodecError(f"a version-{h.version} stream needs the checksum of each tile's codes "
                               "(Bitstream.code_checksums).")
        for crc in stream.code_checksums:
            head += _TILE_CRC.pack(crc)
    if h.icc_profile is not None:
        head += _varint(len(h.icc_profile)) + h.icc_profile
    head += _CRC.pack(zlib.crc32(head))
    return bytes(head) + b"".join(stream.tiles)


def tile_checksum(payload: bytes) -> int:
    """CRC-16/CCITT (XMODEM variant: polynomial 0x1021, initial value 0) of one tile payload."""
    return binascii.crc_hqx(payload, 0)


def code_bytes(levels: Sequence[np.ndarray]) -> bytes:
    """A tile's codes as version 5 checksums them: ``levels`` are the tile's windows of the code
    maps, top level first, each 2-D and serialized in raster order, each code a u16le."""
    out = []
    for codes in levels:
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise VQCodecError(f"a tile's codes of one level must be a 2-D window, not of shape {codes.shape}.")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) > 0xFFFF):
            raise VQCodecError("codes must be from 0 to 65535 to be checksummed.")
        out.append(np.ascontiguousarray(codes, dtype="<u2").tobytes())
    return b"".join(out)


def code_checksum(levels: Sequence[np.ndarray]) -> int:
    """The CRC-16 (as ``tile_checksum``) of a tile's codes serialized by ``code_bytes``: what
    version 5 records for the tile, so that a decoder can tell whether it decoded the codes coded."""
    return binascii.crc_hqx(code_bytes(levels), 0)


class _Reader:
    """A cursor over untrusted bytes whose every read is bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise VQCodecError(f"file is truncated: it ends inside the {what}.")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            b = self.byte(what)
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise VQCodecError(f"the {what} is not minimally encoded; the file is corrupted.")
                if value >= 1 << 64:
                    raise VQCodecError(f"the {what} is too large; the file is corrupted.")
                return value
        raise VQCodecError(f"the {what} is a varint longer than {_MAX_VARINT_BYTES} bytes.")


def _parse(data: bytes, salvage: bool = False) -> tuple[Header, list[int], list[int], int, tuple[int, ...] | None]:
    """Validate the whole file; return the header, tile lengths, damaged tiles (checksum mismatch),
    where the payloads start and the code checksums (None before version 5). With ``salvage`` a file
    cut off inside its payloads is accepted: the tiles it cuts are damaged."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise VQCodecError("not a vqcodec file (bad magic bytes).")
    r = _Reader(data)
    r.take(len(MAGIC), "magic bytes")
    version = r.byte("format version")
    readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
    if version > max(READABLE_VERSIONS):
        raise VQCodecError(
            f"written by a newer vqcodec (format version {version}); this one reads versions {readable}."
        )
    if version not in READABLE_VERSIONS:
        raise VQCodecError(f"unsupported format version {version}; this one reads versions {readable}.")

    # Structure first (layout depends only on the flags), then the CRC, then the meaning of the
    # fields: a flipped bit is reported as corruption rather than as a strange field value.
    flags = r.byte("flags")
    fingerprint = r.take(FINGERPRINT_SIZE, "model fingerprint")
    width = r.varint("width")
    height = r.varint("height")
    resampled = version >= RESAMPLED_VERSION and flags & FLAG_RESAMPLED
    coded = (r.varint("coded width"), r.varint("coded height")) if resampled else None
    channels = r.byte("channel count")
    bit_depth = r.byte("bit depth")
    levels = r.byte("level count")
    log2_tile = r.byte("tile size")
    n_tiles = r.varint("tile count")
    # each tile takes >= 1 length byte + 2 checksum bytes (+ 2 for its codes' checksum); bounds the lists
    per_tile = 5 if version >= CODE_CHECKSUM_VERSION else 3
    if per_tile * n_tiles > r.remaining():
        raise VQCodecError(
            f"tile count {n_tiles} cannot fit in a file of {len(data)} bytes; it is truncated or corrupted."
        )
    lengths = [r.varint("tile length table") for _ in range(n_tiles)]
    checksums = [_TILE_CRC.unpack(r.take(_TILE_CRC.size, "tile checksum table"))[0] for _ in range(n_tiles)]
    code_sums = None
    if version >= CODE_CHECKSUM_VERSION:
        code_sums = tuple(_TILE_CRC.unpack(r.take(_TILE_CRC.size, "code checksum table"))[0] for _ in range(n_tiles))
    icc = None
    if flags & FLAG_ICC:
        icc = r.take(r.varint("ICC profile length"), "ICC profile")
    header_end = r.pos
    (stored_crc,) = _CRC.unpack(r.take(_CRC.size, "header checksum"))
    if zlib.crc32(data[:header_end]) != stored_crc:
        raise VQCodecError("header is corrupted (checksum mismatch).")

    if flags & ~_KNOWN_FLAGS[version]:
        raise VQCodecError(f"header sets unknown flags 0x{flags:02x}; the file is not valid version {version}.")
    if n_tiles == 0:
        raise VQCodecError("file has no tiles.")
    if log2_tile not in _TILE_SIZES.values():
        raise VQCodecError(f"tile size 2**{log2_tile} is not a power of two from 4 to 256.")
    header = Header(fingerprint, width, height, channels, bit_depth, levels, 1 << log2_tile, icc, version, coded)

    payload_start = r.pos
    expected = payload_start + sum(lengths)
    if expected > len(data) and not salvage:
        raise VQCodecError(
            f"file is truncated: the tile lengths need {expected} bytes but the file has {len(data)}."
        )
    if expected < len(data):
        raise VQCodecError(f"file has {len(data) - expected} bytes of trailing garbage after the payload.")
    damaged = []
    pos = payload_start
    view = memoryview(data)
    for k, (n, crc) in enumerate(zip(lengths, checksums)):
        if pos + n > len(data) or binascii.crc_hqx(view[pos : pos + n], 0) != crc:
            damaged.append(k)
        pos += n
    return header, lengths, damaged, payload_start, code_sums


def _damage_error(damaged: list[int]) -> VQCodecError:
    if len(damaged) == 1:
        return VQCodecError(f"payload of tile {damaged[0]} is corrupted (checksum mismatch).")
    listed = ", ".join(map(str, damaged))
    return VQCodecError(f"payloads of {len(damaged)} tiles ({listed}) are corrupted (checksum mismatch).")


def unpack(data: bytes, *, salvage: bool = False) -> Bitstream:
    """Parse and fully validate a `.vqc` file; raises VQCodecError on any defect.

    A tile payload that fails its checksum is an error too, unless ``salvage``: then the stream is
    returned with those tiles' indices in ``damaged`` (their bytes as found, not to be decoded). A
    file cut off inside its payloads is truncated, unless ``salvage``: then the tiles it cuts are
    damaged too (a file missing only its last bytes keeps every earlier tile). Header and other
    structure defects are errors either way. The code checksums of version 5 are read, not checked:
    only a decoder with the model knows the codes (``vqcodec.codec`` checks them)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    header, lengths, damaged, pos, code_sums = _parse(data, salvage)
    if damaged and not salvage:
        raise _damage_error(damaged)
    tiles = []
    for n in lengths:
        tiles.append(data[pos : pos + n])
        pos += n
    return Bitstream(header, tuple(tiles), tuple(damaged), code_sums)


def read_header(data: bytes) -> Header:
    """The header of a complete `.vqc` file, validated exactly as unpack does; a damaged tile
    payload is an error here as in unpack's strict mode (``unpack(data, salvage=True)`` gives the
    header of a file with damaged or cut-off tiles, and names them)."""
    header, _, damaged, _, _ = _parse(data)
    if damaged:
        raise _damage_error(damaged)
    return header
