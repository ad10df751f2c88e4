"""Check that the integer prior gives bit-identical probabilities on CPU and on another device.

Usage: python benchmarks/device_exactness.py --device cuda [--codec-model PATH] [--image PATH]

1. Randomly initialised priors (top with attention, bottom with conditioning), quantized on the CPU:
   parallel probabilities on CPU == on the device; incremental (decoder) probabilities on the device
   == parallel ones on the CPU.
2. The codec model (default: the shipped one): a file compressed on the CPU decodes on the device
   to exactly the same code maps, and a file compressed on the device decodes on the CPU to exactly
   the codes the device's encoder chose.
Prints one line per check and exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vqcodec.priors.int_pixelcnn import IntPixelCNN
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig
from vqcodec.testing import stepper_mismatches


def random_prior(cfg: PriorConfig, codes, cond) -> IntPixelCNN:
    torch.manual_seed(0)
    float_prior = PixelCNNPrior(cfg).eval()
    for p in float_prior.parameters():
        p.data += torch.randn_like(p) * 0.05
    return IntPixelCNN.from_float(float_prior, [(codes, cond, None)])


def check(name: str, net_cpu: IntPixelCNN, device: str, codes, cond) -> bool:
    net_dev = IntPixelCNN(net_cpu.config, net_cpu.state(), device=device)
    t0 = time.time()
    p_cpu = net_cpu.parallel_probs(codes, cond)
    t1 = time.time()
    p_dev = net_dev.parallel_probs(codes, cond).cpu()
    t2 = time.time()
    same = torch.equal(p_cpu, p_dev)
    b, h, w = codes.shape
    stepper = net_dev.stepper(b, h, w, [c.to(device) for c in cond] if cond else None)
    mismatched = len(stepper_mismatches(stepper, p_cpu, codes))
    print(f"{name}: cpu==={device} parallel: {same}; {device} stepper vs cpu parallel mismatched steps: "
          f"{mismatched}/{len(stepper.order)}; cpu {t1 - t0:.3f}s {device} {t2 - t1:.3f}s")
    return same and mismatched == 0


def check_codec(device: str, model_path: str | None, image: str) -> bool:
    from vqcodec.coding.tile_codec import decode_tiles, encode_tiles
    from vqcodec.imageio import read_image, to_model_input
    from vqcodec.zoo.codec_model import load_codec_model

    pix = read_image(image).pixels
    ok = True
    for enc_dev, dec_dev in (("cpu", device), (device, "cpu")):
        enc, dec = load_codec_model(model_path, enc_dev), load_codec_model(model_path, dec_dev)
        x = to_model_input(pix, 8).to(enc_dev)
        t0 = time.time()
        codes = enc.vqvae.encode(x)
        payloads = encode_tiles(enc.priors, codes, enc.tile)
        t1 = time.time()
        decoded = decode_tiles(dec.priors, [tuple(c.shape[1:]) for c in codes], payloads, dec.tile)
        t2 = time.time()
        same = all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(codes, decoded, strict=True))
        size = sum(len(p) for p in payloads)
        print(f"codec: encoded on {enc_dev} ({t1 - t0:.2f}s, {size} bytes), decoded on {dec_dev} ({t2 - t1:.2f}s): "
              f"codes identical: {same}")
        ok &= same
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--codec-model", default=None, help="codec model name or file (default: the default model)")
    ap.add_argument("--image", default="vqcodec/samples/endeavour.png")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(1)
    top_codes = torch.randint(0, 512, (4, 16, 16), generator=g)
    bottom_codes = torch.randint(0, 512, (4, 32, 32), generator=g)
    ok = check("top", random_prior(PriorConfig(attention_every=3), top_codes, None), args.device, top_codes, None)
    cond = [top_codes]
    bottom = random_prior(PriorConfig(cond_levels=1), bottom_codes, cond)
    ok &= check("bottom", bottom, args.device, bottom_codes, cond)
    ok &= check_codec(args.device, args.codec_model, args.image)
    print("ALL EXACT" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
