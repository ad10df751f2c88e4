"""Encode/decode time of a codec model on a folder of images (median and max per image).

Usage: python benchmarks/speed.py --data ../shared/datasets/kodak [--model PATH] [--scale S]
       [--device cpu|cuda] [--threads 2] [--max-images N]

``--scale`` codes every image at that fraction of its size, as a rung of the quality ladder does
(``vqcodec models`` lists the rungs' scales).

Every image is compressed and decompressed once after one warm-up image; the decoded image is
checked against a second decode for determinism. Prints a Markdown table and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vqcodec.codec import compress, decompress
from vqcodec.imageio import list_images, read_image
from vqcodec.metrics import psnr
from vqcodec.zoo.codec_model import load_codec_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_codec_model(args.model, args.device)
    how = {"scale": args.scale} if args.scale is not None else {}  # code older than scales runs without it
    files = list_images(args.data)[: args.max_images]
    warm = read_image(files[0]).pixels[:64, :64]
    decompress(compress(warm, model, **how), model)
    rows, enc_t, dec_t = [], [], []
    for f in files:
        pix = read_image(f).pixels
        t0 = time.perf_counter()
        data = compress(pix, model, **how)
        t1 = time.perf_counter()
        out = decompress(data, model)
        t2 = time.perf_counter()
        bpp = 8 * len(data) / (pix.shape[0] * pix.shape[1])
        enc_t.append(t1 - t0)
        dec_t.append(t2 - t1)
        quality = psnr(pix, out.reshape(pix.shape))
        rows.append((f.name, f"{pix.shape[1]}x{pix.shape[0]}", bpp, quality, t1 - t0, t2 - t1))
        print(f"{f.name}: {bpp:.4f} bpp, encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s", flush=True)
    print(f"\nmodel {model.name} ({model.fingerprint.hex()}), scale {args.scale or 1:g}, device {args.device}, "
          f"{args.threads} thread(s)\n")
    print("| image | size | bpp | PSNR dB | encode s | decode s |\n|---|---|---|---|---|---|")
    for name, size, bpp, p, te, td in rows:
        print(f"| {name} | {size} | {bpp:.4f} | {p:.2f} | {te:.2f} | {td:.2f} |")
    print(f"\nmean bpp {np.mean([r[2] for r in rows]):.4f}, mean PSNR {np.mean([r[3] for r in rows]):.2f} dB")
    print(f"encode: median {statistics.median(enc_t):.2f} s, max {max(enc_t):.2f} s")
    print(f"decode: median {statistics.median(dec_t):.2f} s, max {max(dec_t):.2f} s")


if __name__ == "__main__":
    main()
