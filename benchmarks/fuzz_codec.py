"""Fuzz the whole decoder: N random mutations of valid .vqc files must decode or raise VQCodecError.

Usage: python benchmarks/fuzz_codec.py [--n 10000] [--seed 0] [--model PATH]

The mutations (tests/fuzzing.py) include damage that passes the CRCs, so it reaches the codec layer
and the range decoder. Prints the outcome per kind of mutation and the slowest decode; exits 1 on
any other exception.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzzing import header_end, mutate  # noqa: E402

from vqcodec.bundle import load_codec_model  # noqa: E402
from vqcodec.codec import compress, decompress  # noqa: E402
from vqcodec.errors import VQCodecError  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_codec_model(args.model)
    small = dataclasses.replace(model, tile=4)
    rng_img = np.random.default_rng(args.seed)
    seeds = []
    for m, (h, w) in ((model, (16, 16)), (small, (24, 32))):
        pix = (rng_img.random((h, w, 3)) * 255).astype(np.uint8)
        seeds.append((m, compress(pix, m)))
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
