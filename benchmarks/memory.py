"""Time and peak resident memory of compress and decompress at growing image sizes.

Usage: python benchmarks/memory.py [--megapixels 1 6 24] [--model NAME|FILE] [--threads 2]

Each size is a smooth synthetic RGB photo-like image (4:3), compressed in one fresh process and
decompressed in another, so each peak belongs to that one operation (it includes the interpreter,
torch and the model). The decoder forks a worker process per core for the tiles, so the peak is
the largest sum, sampled every 20 ms, of the PSS (proportional set size: pages shared with the
parent counted once) of the process and its workers; the process's own peak RSS
(``resource.getrusage``) is printed beside it. Prints a Markdown table; time should grow linearly
with the pixel count and memory stay bounded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, threading, time
import numpy as np, torch

def tree_pss_mb():
    pids = [os.getpid()]
    for task in os.listdir("/proc/self/task"):
        try:
            pids += [int(p) for p in open(f"/proc/self/task/{task}/children").read().split()]
        except OSError:
            pass
    total = 0
    for pid in pids:
        try:
            total += next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total / 1024

peak = [0.0]
def watch():
    while True:
        peak[0] = max(peak[0], tree_pss_mb())
        time.sleep(0.02)

threading.Thread(target=watch, daemon=True).start()
torch.set_num_threads(int(sys.argv[4]))
from vqcodec.codec import compress, decompress
from vqcodec.zoo.codec_model import load_codec_model
model = load_codec_model(None if sys.argv[3] == "-" else sys.argv[3])
path = sys.argv[2]
t0 = time.perf_counter()
if sys.argv[1] == "compress":
    pixels = np.load(path + ".npy")
    data = compress(pixels, model)
    open(path, "wb").write(data)
else:
    decompress(open(path, "rb").read(), model)
seconds = time.perf_counter() - t0
peak[0] = max(peak[0], tree_pss_mb())
print(json.dumps({"seconds": seconds, "peak_mb": peak[0],
                  "self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def photo_like(megapixels: float, seed: int = 0):
    """A smooth 4:3 RGB image with edges and texture, built in float32 row blocks."""
    import numpy as np

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5 / 8)) * 8
    height = int(round(width * 3 / 4 / 8)) * 8
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 3), np.uint8)
    x = np.linspace(0, 1, width, dtype=np.float32)
    params = rng.uniform(0.5, 12, (3, 4)).astype(np.float32)
    for y0 in range(0, height, 512):
        y = np.linspace(y0 / height, min(height, y0 + 512) / height, min(512, height - y0), dtype=np.float32)
        yy, xx = np.meshgrid(y, x, indexing="ij")
        for c in range(3):
            f1, f2, f3, f4 = params[c]
            v = 0.5 + 0.25 * np.sin(f1 * xx + f2 * yy) + 0.15 * np.sin(f3 * 7 * xx * yy + f4)
            v += (((xx * f1 * 4).astype(np.int32) + (yy * f2 * 4).astype(np.int32)) % 2) * 0.1
            v += rng.normal(0, 0.02, v.shape).astype(np.float32)
            out[y0 : y0 + len(y), :, c] = np.clip(v * 255, 0, 255).astype(np.uint8)
    return out


def run(op: str, path: Path, model: str, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, op, str(path), model, str(threads)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{op} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 6.0, 24.0])
    ap.add_argument("--model", default="-")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.megapixels:
            pixels = photo_like(mp)
            path = Path(tmp) / f"{mp}.vqc"
            np.save(str(path) + ".npy", pixels)
            enc = run("compress", path, args.model, args.threads)
            dec = run("decompress", path, args.model, args.threads)
            h, w = pixels.shape[:2]
            bpp = 8 * path.stat().st_size / (h * w)
            rows.append((f"{w}x{h}", h * w / 1e6, bpp, enc, dec))
            print(f"{w}x{h}: encode {enc['seconds']:.1f} s / {enc['peak_mb']:.0f} MB, "
                  f"decode {dec['seconds']:.1f} s / {dec['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    print("| size | MP | bpp | encode s | encode peak MB | decode s | decode peak MB (own RSS) "
          "| s per MP (enc / dec) |")
    print("|---|---|---|---|---|---|---|---|")
    for size, mp, bpp, enc, dec in rows:
        print(f"| {size} | {mp:.1f} | {bpp:.3f} | {enc['seconds']:.1f} | {enc['peak_mb']:.0f} | {dec['seconds']:.1f} "
              f"| {dec['peak_mb']:.0f} ({dec['self_rss_mb']:.0f}) "
              f"| {enc['seconds'] / mp:.1f} / {dec['seconds'] / mp:.1f} |")


if __name__ == "__main__":
    main()
