"""Decode time of format 4 (the VQ-VAE decoder in bands, side by side on the cores) against the
whole-image decoder of formats 2 and 3, on the very same codes.

Usage: python benchmarks/bands.py --data ../shared/datasets/kodak [--model NAME|FILE] [--scale S]
       [--threads 2] [--max-images N] [--repeats 2]

Each image is compressed once (format 4); the same header and payloads are written again as the
older version (2, or 3 when coded at another size), which decodes the codes the same way but runs
the VQ-VAE on the whole image on one thread. Both files are decoded ``--repeats`` times,
interleaved, so the machine's drift hits both alike; prints each image's times, the median of
each and the PSNR of both decodes (they differ only in float rounding).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from options import image_folder_parser  # benchmarks/options.py, beside this script

from vqcodec.codec import compress, decompress
from vqcodec.coding.bitstream import pack, unpack
from vqcodec.imageio import list_images, read_image
from vqcodec.metrics import psnr
from vqcodec.zoo.codec_model import load_codec_model


def older_version(data: bytes) -> bytes:
    """The same file as the version before bands (2, or 3 with a coded size)."""
    stream = unpack(data)
    version = 3 if stream.header.coded_size else 2
    return pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, version=version)))


def main() -> None:
    ap = image_folder_parser(__doc__)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_codec_model(args.model)
    times: dict[str, list[float]] = {"whole": [], "bands": []}
    quality: dict[str, list[float]] = {"whole": [], "bands": []}
    for k, f in enumerate(list_images(args.data)[: args.max_images]):
        pix = read_image(f).pixels
        files = {"bands": compress(pix, model, scale=args.scale)}
        files["whole"] = older_version(files["bands"])
        if k == 0:
            decompress(files["bands"], model)  # warm-up
        decoded = {}
        for _ in range(args.repeats):
            for name, data in files.items():
                t = time.perf_counter()
                decoded[name] = decompress(data, model)
                times[name].append(time.perf_counter() - t)
        for name, out in decoded.items():
            quality[name].append(psnr(pix, out.reshape(pix.shape)))
        last = {name: " ".join(f"{x:.2f}" for x in t[-args.repeats :]) for name, t in times.items()}
        print(f"{f.name}: whole {last['whole']} s, bands {last['bands']} s", flush=True)
    whole, bands = statistics.median(times["whole"]), statistics.median(times["bands"])
    print(f"\nmodel {model.name}, scale {args.scale:g}, {args.threads} thread(s)")
    print(f"decode median: whole {whole:.2f} s, bands {bands:.2f} s ({whole / bands:.2f}x)")
    whole_db, bands_db = statistics.mean(quality["whole"]), statistics.mean(quality["bands"])
    print(f"mean PSNR: whole {whole_db:.3f} dB, bands {bands_db:.3f} dB")


if __name__ == "__main__":
    main()
