"""What one competing busy process costs the command line: quiet time vs. loaded time, per image.

Usage: python benchmarks/under_load.py --data ../shared/datasets/kodak [--max-images 4] [--competitors 1]

Runs ``vqcodec compress`` and ``vqcodec decompress`` as a user would (fresh processes, the default
thread choice of ``vqcodec.threads``), first on a quiet machine, then beside ``--competitors``
processes that each keep one core busy; and, for comparison, the loaded runs again with every core
forced (``--threads`` = all cores, what torch does by default). Prints each median and the ratio
loaded / quiet; a fair share of a 2-core machine beside one busy process is 2x. Run it with nothing
else running: the quiet times are the reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqcodec.imageio import list_images

SPIN = "while True: pass"


def timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vqcodec", *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def run_all(files: list[Path], folder: Path, extra: list[str], env: dict[str, str]) -> tuple[list[float], list[float]]:
    enc, dec = [], []
    for f in files:
        vqc, png = folder / (f.stem + ".vqc"), folder / (f.stem + ".png")
        enc.append(timed(["compress", str(f), "-o", str(vqc), "--force", *extra], env))
        dec.append(timed(["decompress", str(vqc), "-o", str(png), "--force", *extra], env))
    return enc, dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--max-images", type=int, default=4)
    ap.add_argument("--competitors", type=int, default=1)
    args = ap.parse_args()
    files = list_images(args.data)[: args.max_images]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the default choice, as a user has it
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_all(files[:1], folder, [], env)  # warm the file cache
        results = {"quiet": run_all(files, folder, [], env)}
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.competitors)]
        try:
            time.sleep(0.5)
            results["loaded"] = run_all(files, folder, [], env)
            results[f"loaded, --threads {cores}"] = run_all(files, folder, ["--threads", str(cores)], env)
        finally:
            for s in spinners:
                s.kill()
                s.wait()
    quiet = [statistics.median(t) for t in results["quiet"]]
    print(f"{len(files)} images, {cores} cores, {args.competitors} competing busy process(es)\n")
    print("| run | encode median s | decode median s | encode / quiet | decode / quiet |\n|---|---|---|---|---|")
    for name, (enc, dec) in results.items():
        e, d = statistics.median(enc), statistics.median(dec)
        print(f"| {name} | {e:.2f} | {d:.2f} | {e / quiet[0]:.2f}x | {d / quiet[1]:.2f}x |")


if __name__ == "__main__":
    main()
