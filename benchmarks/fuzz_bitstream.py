"""Fuzz the `.vqc` parser at scale: every mangled input must unpack or raise VQCodecError, nothing else.

Usage: python benchmarks/fuzz_bitstream.py --n 10000 --seed 0

Runs n random mutations (byte flips, insertions, deletions; half of them confined to the header
with its CRC repaired so the field checks behind it are reached), n/2 truncations, and n/10 each of
headers that claim a huge image and of tile lengths that disagree with the payloads
(``vqcodec.testing.huge_header_mutation`` and ``lengths_mutation``, shared with fuzz_codec.py) of a
few valid streams, prints how often each outcome occurred, and exits 1 on any foreign exception or
on a stream that unpacks but does not re-pack to the same bytes (or whose damaged tiles salvage
mode does not report).
"""

from __future__ import annotations

import argparse
import random
import re
import struct
import sys
import time
import traceback
import zlib
from collections import Counter

from vqcodec.coding.bitstream import Bitstream, Header, pack, unpack
from vqcodec.errors import VQCodecError
from vqcodec.testing import huge_header_mutation, lengths_mutation


def base_streams(rng: random.Random) -> list[Bitstream]:
    """A few valid streams of different shapes to mangle."""
    fp = rng.randbytes(16)
    return [
        Bitstream(
            Header(fp, 768, 512, 3, 8, 2, 16), tuple(rng.randbytes(rng.randint(0, 600)) for _ in range(24)),
            code_checksums=tuple(rng.randrange(1 << 16) for _ in range(24)),
        ),
        Bitstream(Header(fp, 5, 3, 1, 16, 3, 4, b"icc" * 50), (b"ab", b""), code_checksums=(0x1234, 0)),
        Bitstream(Header(fp, 40000, 2, 3, 8, 2, 256, rng.randbytes(700)), (rng.randbytes(20000),),
                  code_checksums=(0xFFFF,)),
        Bitstream(Header(fp, 300, 3, 3, 8, 2, 16, b"ICC", version=4, coded_size=(150, 2)), (b"ab", b"")),
    ]


def mutate(data: bytes, header_end: int, rng: random.Random) -> bytes:
    """One to three flips/insertions/deletions; half the time inside the header, CRC repaired."""
    fix_crc = rng.random() < 0.5
    b = bytearray(data)
    end = header_end
    for _ in range(rng.randint(1, 3)):
        hi = end if fix_crc else len(b)
        if hi == 0:
            break
        pos = rng.randrange(hi)
        kind = rng.randrange(3)
        if kind == 0:
            b[pos] ^= rng.randrange(1, 256)
        elif kind == 1:
            n = rng.randint(1, 8)
            b[pos:pos] = rng.randbytes(n)
            end += n
        else:
            n = rng.randint(1, min(8, hi - pos))
            del b[pos : pos + n]
            end -= n
    if fix_crc:
        b[end : end + 4] = struct.pack("<I", zlib.crc32(b[:end]))
    return bytes(b)


def outcome(data: bytes) -> str:
    """Classify one input; raises AssertionError for a canonicality violation."""
    try:
        result = unpack(data)
    except VQCodecError as e:
        if str(e).startswith("payload"):  # only tile payloads are damaged: salvage must name them
            salvaged = unpack(data, salvage=True)
            if not salvaged.damaged or pack(salvaged) == data:
                raise AssertionError("salvage did not report the damaged tiles") from None
        return "refused: " + re.sub(r"\d+", "N", str(e))
    if pack(result) != data:
        raise AssertionError("unpacked stream does not re-pack to the same bytes")
    return "unpacked"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000,
                        help="number of mutations (truncations: n/2; huge headers and bad lengths: n/10 each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    cases = []
    for stream in base_streams(rng):
        data = pack(stream)
        cases.append((data, len(data) - sum(map(len, stream.tiles)) - 4))  # header CRC offset

    counts: Counter[str] = Counter()
    failures = 0
    start = time.perf_counter()
    jobs = [("mutation", i) for i in range(args.n)] + [("truncation", i) for i in range(args.n // 2)]
    jobs += [("huge", i) for i in range(args.n // 10)] + [("lengths", i) for i in range(args.n // 10)]
    for kind, _ in jobs:
        data, header_end = rng.choice(cases)
        if kind == "mutation":
            sample = mutate(data, header_end, rng)
        elif kind == "huge":
            sample = huge_header_mutation(rng, data)
        elif kind == "lengths":
            sample = lengths_mutation(rng, data)
        else:
            sample = data[: rng.randrange(len(data))]
        try:
            counts[f"{kind} {outcome(sample)}"] += 1
        except Exception:  # noqa: BLE001 - anything but VQCodecError is the bug being hunted
            failures += 1
            counts[f"{kind} FOREIGN EXCEPTION"] += 1
            if failures <= 5:
                print(f"input ({len(sample)} bytes): {sample.hex()}", file=sys.stderr)
                traceback.print_exc()
    elapsed = time.perf_counter() - start

    for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{count:8d}  {name}")
    print(f"{len(jobs)} inputs in {elapsed:.2f} s, {failures} failures (seed {args.seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
