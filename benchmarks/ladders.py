"""Two quality ladders side by side on one folder, in one run: bits, quality, encode and decode time.

Usage: python benchmarks/ladders.py --data ../shared/datasets/kodak
       [--old RUNG,RUNG,...] [--new RUNG,RUNG,...] [--model-dir DIR] [--threads 2] [--max-images N]
       [--json out.json]

A rung is ``MODEL`` or ``MODEL@SCALE`` (what ``vqcodec models`` lists). ``--old`` defaults to the
shipped ladder as it was before the multi-pass priors (``REFERENCE``), ``--new`` to the shipped
ladder. Every image is coded by every rung of both ladders, old and new alternating, so the machine's
drift hits both alike; times exclude process start and model load (one warm-up image first).

Prints one Markdown table per rung pair (old, new): bpp, PSNR, MS-SSIM, median encode and decode
seconds and their new/old ratios; then the BD-rate (PSNR) of the new ladder against the old one.
Each decode is checked against a second decode of the same file (determinism).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vqcodec.bench.bd import bd_rate
from vqcodec.codec import compress, decompress
from vqcodec.imageio import list_images, read_image
from vqcodec.metrics import ms_ssim, psnr
from vqcodec.zoo.codec_model import load_codec_model
from vqcodec.zoo.registry import ladder

# the ladder before generation-2 priors (vqcodec 0.5): the reference the new one is measured against
REFERENCE = ("paper-down-wf@0.5,paper-down-wf@0.625,paper-down-wf@0.75,paper-down-wf@0.875,paper-wf,"
             "paper-up-t5@1.25,paper-up-t5@1.5,paper-up-b3@1.75")


def parse_rungs(text: str) -> list[tuple[str, float]]:
    """"a@0.5,b" -> [("a", 0.5), ("b", 1.0)]."""
    out = []
    for item in text.split(","):
        name, _, scale = item.strip().partition("@")
        out.append((name, float(scale) if scale else 1.0))
    return out


def measure(model, pixels: np.ndarray, scale: float) -> dict[str, float]:
    """One image through one rung: timed compress and decompress, size and quality."""
    t = time.perf_counter()
    data = compress(pixels, model, scale=scale)
    encode = time.perf_counter() - t
    t = time.perf_counter()
    out = decompress(data, model)
    decode = time.perf_counter() - t
    if not np.array_equal(out, decompress(data, model)):
        raise SystemExit("two decodes of one file differ")
    h, w = pixels.shape[:2]
    return {"bpp": 8 * len(data) / (h * w), "psnr": psnr(pixels, out), "ms_ssim": ms_ssim(pixels, out),
            "encode_s": encode, "decode_s": decode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--old", default=REFERENCE)
    ap.add_argument("--new", default=",".join(r.name for r in ladder()))
    ap.add_argument("--model-dir", type=Path, action="append", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ladders = {"old": parse_rungs(args.old), "new": parse_rungs(args.new)}
    if len(ladders["old"]) != len(ladders["new"]):
        raise SystemExit("the two ladders need as many rungs")
    dirs = tuple(args.model_dir)
    models = {name: load_codec_model(name, model_dirs=dirs) for rungs in ladders.values() for name, _ in rungs}
    files = [f for f in list_images(args.data)[: args.max_images]]
    warm = read_image(files[0]).pixels[:128, :128]
    for m in models.values():
        measure(m, warm, 1.0)
    runs: dict[str, list[list[dict]]] = {k: [[] for _ in v] for k, v in ladders.items()}
    for f in files:
        pixels = read_image(f).pixels
        for i in range(len(ladders["old"])):
            for which in ("old", "new") if i % 2 == 0 else ("new", "old"):
                name, scale = ladders[which][i]
                runs[which][i].append(measure(models[name], pixels, scale))
        print(f"{f.name} done", flush=True)

    def mean(which: str, i: int, key: str) -> float:
        return statistics.fmean(r[key] for r in runs[which][i])

    def median(which: str, i: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[which][i])

    print(f"\n{len(files)} images of {args.data}, {args.threads} threads; means of bpp, PSNR, MS-SSIM; "
          "medians of times")
    print("\n| q | old rung | new rung | bpp old | bpp new | PSNR old | PSNR new | MS-SSIM old | MS-SSIM new "
          "| encode old s | encode new s | x | decode old s | decode new s | x |")
    print("|" + "---|" * 15)
    summary = []
    for i, ((on, os_), (nn, ns)) in enumerate(zip(ladders["old"], ladders["new"])):
        row = {k: {key: mean(k, i, key) for key in ("bpp", "psnr", "ms_ssim")} for k in ("old", "new")}
        for k in ("old", "new"):
            row[k].update({key: median(k, i, key) for key in ("encode_s", "decode_s")})
        o, n = row["old"], row["new"]
        print(f"| {i + 1} | {on}@{os_:g} | {nn}@{ns:g} | {o['bpp']:.4f} | {n['bpp']:.4f} | {o['psnr']:.2f} | "
              f"{n['psnr']:.2f} | {o['ms_ssim']:.4f} | {n['ms_ssim']:.4f} | {o['encode_s']:.3f} | "
              f"{n['encode_s']:.3f} | {n['encode_s'] / o['encode_s']:.2f} | {o['decode_s']:.3f} | "
              f"{n['decode_s']:.3f} | {n['decode_s'] / o['decode_s']:.2f} |")
        summary.append({"quality": i + 1, "old": {"rung": f"{on}@{os_:g}", **o}, "new": {"rung": f"{nn}@{ns:g}", **n}})
    rates = {k: [s[k]["bpp"] for s in summary] for k in ("old", "new")}
    quality = {k: [s[k]["psnr"] for s in summary] for k in ("old", "new")}
    bd = bd_rate(rates["old"], quality["old"], rates["new"], quality["new"])
    print(f"\nBD-rate (PSNR) of the new ladder against the old: {bd:+.2f} %")
    if args.json:
        per_image = {k: [[{"file": f.name, **r} for f, r in zip(files, rung)] for rung in v] for k, v in runs.items()}
        args.json.write_text(json.dumps({"rungs": summary, "bd_rate_psnr": bd, "images": per_image}, indent=1))


if __name__ == "__main__":
    main()
