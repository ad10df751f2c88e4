"""Encode and decode time of two checkouts of vqcodec, alternated so that machine drift hits both alike.

Usage: python benchmarks/alternate.py --data ../shared/datasets/kodak --old /tmp/old [--new .]
       [--quality 5 --quality 8] [--max-images 6] [--rounds 2] [--threads 2]

On a shared 2-core machine the speed drifts by 5-20 % within minutes, so two ``speed.py`` runs
one after another can show a gain that is not there, or hide one. This script compresses the first
``--max-images`` images at each quality once (with the new checkout), then times, for ``--rounds``
rounds, each checkout in a fresh process of its own (``PYTHONPATH`` set to that checkout):
decoding every file and compressing every image, in turn, old then new. The two must decode each
file to the same pixels and compress each image to the same bytes (checked by hash). Prints, per
quality and checkout, the median per-image times of every round, and the decode time of each
quality relative to the first one given (the ladder's "decode time <= 2x the default" target).
Make the old checkout with ``git worktree add /tmp/old COMMIT``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path
import numpy as np, torch
from vqcodec.codec import compress, decompress
from vqcodec.imageio import read_image
torch.set_num_threads(int(sys.argv[1]))
quality, folder, images = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
files = sorted(folder.glob("*.vqc"))
decompress(files[0].read_bytes())  # warm-up: loading the model is not timed
out = {"decode": [], "encode": [], "pixels": [], "bytes": []}
for f in files:
    data = f.read_bytes()
    t = time.perf_counter()
    pixels = decompress(data)
    out["decode"].append(time.perf_counter() - t)
    out["pixels"].append(hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest())
for path in images:
    pixels = read_image(path).pixels
    t = time.perf_counter()
    data = compress(pixels, quality=quality)
    out["encode"].append(time.perf_counter() - t)
    out["bytes"].append(hashlib.sha256(data).hexdigest())
print(json.dumps(out))
"""

MAKE_FILES = r"""
import sys
from pathlib import Path
import torch
from vqcodec.codec import compress
from vqcodec.imageio import read_image
torch.set_num_threads(int(sys.argv[1]))
quality, folder = int(sys.argv[2]), Path(sys.argv[3])
for path in sys.argv[4:]:
    (folder / (Path(path).stem + ".vqc")).write_bytes(compress(read_image(path).pixels, quality=quality))
"""


def run(checkout: Path, code: str, args: list[str]) -> str:
    """``code`` run with ``args`` in a fresh process importing vqcodec from ``checkout``."""
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=checkout, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{checkout}: {proc.stderr.strip().splitlines()[-1]}")
    return proc.stdout


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from vqcodec.imageio import list_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--old", required=True, type=Path)
    ap.add_argument("--new", type=Path, default=Path("."))
    ap.add_argument("--quality", type=int, action="append")
    ap.add_argument("--max-images", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    qualities = args.quality or [5]
    images = [str(p.resolve()) for p in list_images(args.data)[: args.max_images]]
    checkouts = {"old": args.old, "new": args.new}
    times: dict[tuple[int, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for q in qualities:
            folders[q] = Path(tmp) / f"q{q}"
            folders[q].mkdir()
            run(args.new, MAKE_FILES, [str(args.threads), str(q), str(folders[q]), *images])
        for r in range(args.rounds):
            for q in qualities:
                seen = {}
                for name, checkout in checkouts.items():
                    out = json.loads(run(checkout, CHILD, [str(args.threads), str(q), str(folders[q]), *images]))
                    for key in ("pixels", "bytes"):
                        if seen.setdefault(key, out[key]) != out[key]:
                            raise SystemExit(f"quality {q}: old and new give different {key}")
                    medians = (statistics.median(out["encode"]), statistics.median(out["decode"]))
                    times.setdefault((q, name), []).append(medians)
                    print(f"round {r + 1}, quality {q}, {name}: encode {medians[0]:.2f} s, decode {medians[1]:.2f} s",
                          file=sys.stderr, flush=True)
    print(f"\n{len(images)} images from {args.data}, {args.threads} thread(s), {args.rounds} round(s); "
          f"old = {args.old}\n")
    print("| quality | code | encode median s, by round | decode median s, by round | decode vs first quality |")
    print("|---|---|---|---|---|")
    for q in qualities:
        for name in checkouts:
            enc = " / ".join(f"{e:.2f}" for e, _ in times[(q, name)])
            dec = " / ".join(f"{d:.2f}" for _, d in times[(q, name)])
            first = times[(qualities[0], name)]
            ratio = " / ".join(f"{d / d0:.2f}x" for (_, d), (_, d0) in zip(times[(q, name)], first))
            print(f"| {q} | {name} | {enc} | {dec} | {ratio} |")


if __name__ == "__main__":
    main()
