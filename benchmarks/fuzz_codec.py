"""Fuzz the whole decoder: N random mutations of valid .vqc files must decode or raise VQCodecError.

Usage: python benchmarks/fuzz_codec.py [--n 10000] [--seed 0] [--model PATH]

The mutations (``vqcodec.testing.mutate``) include damage that passes the CRCs, so it reaches the
codec layer and the range decoder, headers that claim a huge image (``huge``: over the decoder's
size limit, or with payloads too short for the claimed codes; both must be refused before anything
is allocated) and tile lengths that disagree with the payloads (``lengths``). Prints the outcome per
kind of mutation and the slowest decode; exits 1 on any other exception.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

import numpy as np
import torch

from vqcodec.codec import compress, decompress
from vqcodec.errors import VQCodecError
from vqcodec.testing import header_end, mutate
from vqcodec.zoo.codec_model import load_codec_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_codec_model(args.model)
    rng_img = np.random.default_rng(args.seed)
    seeds = []
    for tile, (h, w) in ((None, (16, 16)), (4, (24, 32))):
        pix = (rng_img.random((h, w, 3)) * 255).astype(np.uint8)
        seeds.append((model, compress(pix, model, tile=tile)))
    rng = random.Random(args.seed)
    outcomes: Counter[tuple[str, str]] = Counter()
    slowest = 0.0
    for i in range(args.n):
        m, data = seeds[i % len(seeds)]
        kind, damaged = mutate(rng, data, header_end(data))
        start = time.perf_counter()
        try:
            decompress(damaged, m)
            outcomes[(kind, "decoded")] += 1
        except VQCodecError:
            outcomes[(kind, "refused")] += 1
        except Exception as err:  # noqa: BLE001 - what a fuzzer looks for
            print(f"mutation {i} ({kind}): {type(err).__name__}: {err}\n{damaged.hex()}")
            return 1
        slowest = max(slowest, time.perf_counter() - start)
    for (kind, result), count in sorted(outcomes.items()):
        print(f"{kind:>12} {result:>8}: {count}")
    print(f"{args.n} mutations, no foreign exception; slowest decode {slowest:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
