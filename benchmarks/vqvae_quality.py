"""Stage-1 quality: PSNR of VQ-VAE reconstructions (no entropy coding) and codebook use per level.

Usage: python benchmarks/vqvae_quality.py --model runs/vqvae/model.safetensors --data ../shared/datasets/kodak
"""

from __future__ import annotations

import argparse
import json

import torch

from vqcodec.imageio import list_images
from vqcodec.train.evaluation import evaluate_images
from vqcodec.zoo.files import load_vqvae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_vqvae(args.model)
    result = evaluate_images(model, list_images(args.data))
    k = model.config.num_codes
    for lvl in range(model.config.levels):
        result[f"used{lvl}_percent"] = 100 * result[f"used{lvl}"] / k
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
