"""Where encode and decode time goes: each stage of the codec timed on its own.

Usage: python benchmarks/stages.py --data ../shared/datasets/kodak [--model NAME|FILE] [--scale S]
       [--threads 2] [--max-images N]

Runs the stages ``vqcodec.compress`` and ``vqcodec.decompress`` string together, one after another
and each timed, on every image (after a warm-up image), and prints the median time of each stage
and its share:

* encode: VQ-VAE encode (image to code maps), prior pass (the integer priors' probabilities of
  every code, ``tile_symbols``), range coding (``encode_symbols``), container (``pack``);
* decode: container (``unpack``), priors and range decoding (``decode_tiles``: the two are
  interleaved, a symbol per step, so they are timed together; the workers run here), VQ-VAE
  decode (code maps to pixels, and the resize of a resampled rung).

The stages' outputs are checked against ``compress``/``decompress`` (same bytes, same pixels), so
the breakdown times the real code paths.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from options import image_folder_parser  # benchmarks/options.py, beside this script

from vqcodec.codec import compress, decompress, image_codes, reconstruction_windows
from vqcodec.coding.bitstream import Bitstream, Header, pack, unpack
from vqcodec.coding.range_coder import encode_symbols
from vqcodec.coding.tile_codec import decode_tiles, tile_code_checksums, tile_symbols
from vqcodec.imageio import from_model_output, list_images, read_image
from vqcodec.priors.autoregress import one_thread
from vqcodec.resample import coded_size
from vqcodec.vqvae import decode_in_windows
from vqcodec.workers import fork_workers
from vqcodec.zoo.codec_model import load_codec_model

ENCODE = ("VQ-VAE encode", "prior pass", "range coding", "container")
DECODE = ("container", "priors + range decoding", "VQ-VAE decode")


def staged(model, pixels: np.ndarray, scale: float) -> tuple[dict[str, float], dict[str, float], bytes, np.ndarray]:
    """Stage times of encoding and decoding ``pixels``, the file and the decoded pixels."""
    enc: dict[str, float] = {}
    dec: dict[str, float] = {}
    h, w, channels = pixels.shape
    cw, ch = coded_size(w, h, scale)
    t = time.perf_counter()
    codes = image_codes(model, pixels, 8, (cw, ch))
    enc["VQ-VAE encode"] = time.perf_counter() - t
    header = Header(model.fingerprint, w, h, channels, 8, model.levels, model.tile, None,
                    coded_size=(cw, ch) if (cw, ch) != (w, h) else None)
    t = time.perf_counter()
    parts = dict(tile_symbols(model.priors, codes, header.tile_size, header.symbol_order))
    enc["prior pass"] = time.perf_counter() - t
    t = time.perf_counter()
    payloads = tuple(encode_symbols(parts[k]) for k in range(len(parts)))
    enc["range coding"] = time.perf_counter() - t
    t = time.perf_counter()
    sums = tile_code_checksums(codes, header.tile_size)
    data = pack(Bitstream(header, payloads, code_checksums=tuple(sums[k] for k in range(len(payloads)))))
    enc["container"] = time.perf_counter() - t

    t = time.perf_counter()
    stream = unpack(data)
    dec["container"] = time.perf_counter() - t
    head = stream.header
    shapes = model.vqvae.code_shapes(head.coded_height, head.coded_width)
    t = time.perf_counter()
    maps = decode_tiles(model.priors, shapes, list(stream.tiles), head.tile_size, order=head.symbol_order)
    dec["priors + range decoding"] = time.perf_counter() - t
    t = time.perf_counter()
    workers = fork_workers(maps[0].device)
    with one_thread(), torch.no_grad():  # the windows as decompress runs them (in worker processes)
        recon = decode_in_windows(model.vqvae, maps, reconstruction_windows(model, head), head.coded_height,
                                  head.coded_width, workers)
        recon = model.vqvae.resize_back(recon, head.width, head.height, workers)
    out = from_model_output(recon.cpu(), head.channels, head.bit_depth)
    dec["VQ-VAE decode"] = time.perf_counter() - t
    return enc, dec, data, out


def table(title: str, names: tuple[str, ...], runs: list[dict[str, float]]) -> None:
    medians = {n: statistics.median(r[n] for r in runs) for n in names}
    total = statistics.median(sum(r.values()) for r in runs)
    print(f"\n| {title} stage | median s | share |\n|---|---|---|")
    for n in names:
        print(f"| {n} | {medians[n]:.3f} | {medians[n] / sum(medians.values()):.0%} |")
    print(f"| total (median of sums) | {total:.3f} | |")


def main() -> None:
    ap = image_folder_parser(__doc__)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_codec_model(args.model)
    files = list_images(args.data)[: args.max_images]
    staged(model, read_image(files[0]).pixels[:64, :64], 1.0)  # warm-up
    enc_runs, dec_runs = [], []
    for f in files:
        pixels = read_image(f).pixels
        if pixels.shape[2] != 3:
            continue
        enc, dec, data, out = staged(model, pixels, args.scale)
        if data != compress(pixels, model, scale=args.scale) or not np.array_equal(out, decompress(data, model)):
            raise SystemExit(f"{f.name}: the stages do not give what compress/decompress give")
        enc_runs.append(enc)
        dec_runs.append(dec)
        print(f"{f.name}: encode {sum(enc.values()):.2f} s, decode {sum(dec.values()):.2f} s", flush=True)
    print(f"\nmodel {model.name}, scale {args.scale:g}, {args.threads} thread(s), {len(enc_runs)} images")
    table("encode", ENCODE, enc_runs)
    table("decode", DECODE, dec_runs)


if __name__ == "__main__":
    main()
