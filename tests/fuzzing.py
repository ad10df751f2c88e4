"""Random damage to .vqc files, shared by the fuzz test and benchmarks/fuzz_codec.py."""

from __future__ import annotations

import dataclasses
import random
import zlib

from vqcodec.bitstream import Bitstream, pack, unpack


def header_end(data: bytes) -> int:
    """Offset of the header CRC in a valid file (the header is everything before it)."""
    stream = unpack(data)
    return len(data) - sum(len(t) for t in stream.tiles) - 4


def with_header_crc(data: bytearray, end: int) -> bytes:
    data[end : end + 4] = zlib.crc32(bytes(data[:end])).to_bytes(4, "little")
    return bytes(data)


def mutate(rng: random.Random, data: bytes, hend: int) -> tuple[str, bytes]:
    """One random mutation; the ones that fix the checksums reach the codec layer and the range decoder."""
    kind = rng.choices(
        ["flip", "byte", "truncate", "insert", "append", "header_crc", "payload_crc", "tiles", "fields"],
        weights=[25, 15, 15, 10, 5, 10, 10, 6, 4],
    )[0]
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == "truncate":
        del buf[rng.randrange(len(buf)) :]
    elif kind == "insert":
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "append":
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "header_crc":  # a header byte changes and the header CRC is recomputed
        i = rng.randrange(4, hend)
        buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
        return kind, with_header_crc(buf, hend)
    elif kind == "payload_crc":  # payload bytes change; the tiles' CRC-16s, then the header CRC, are repaired
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(hend + 4, len(buf))
            buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
        stream = unpack(data)
        tiles, pos = [], hend + 4
        for t in stream.tiles:  # same lengths, so pack rewrites only the checksum table and header CRC
            tiles.append(bytes(buf[pos : pos + len(t)]))
            pos += len(t)
        return kind, pack(Bitstream(stream.header, tuple(tiles)))
    elif kind == "tiles":  # a consistent container whose tile payloads are damaged
        stream = unpack(data)
        tiles = list(stream.tiles)
        k = rng.randrange(len(tiles))
        op = rng.randrange(5)
        if op == 0:
            tiles[k] = tiles[k][: rng.randrange(len(tiles[k]) + 1)]
        elif op == 1:
            tiles[k] = tiles[k] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 4, 8])))
        elif op == 2:
            tiles[k] = bytes(rng.randrange(256) for _ in range(rng.choice([0, 4, 8, 64])))
        elif op == 3 and len(tiles) > 1:
            del tiles[k]
        else:
            tiles.append(bytes(4 * rng.randrange(3)))
        return kind, pack(Bitstream(stream.header, tuple(tiles)))
    else:  # valid header values that disagree with the payloads
        stream = unpack(data)
        h = stream.header
        field = rng.choice(["width", "height", "channels", "bit_depth", "levels", "tile_size"])
        value = {
            "width": rng.randint(1, 24), "height": rng.randint(1, 24), "channels": 4 - h.channels,
            "bit_depth": 24 - h.bit_depth, "levels": 5 - h.levels, "tile_size": rng.choice([4, 8, 16, 64]),
        }[field]
        return kind, pack(Bitstream(dataclasses.replace(h, **{field: value}), stream.tiles))
    return kind, bytes(buf)
