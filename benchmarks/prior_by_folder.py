"""Each prior's NLL (bits per code) on the codes of several image folders, side by side.

Why: a train/validation gap can mean that the prior memorised its training images, or only that the
validation images are harder (or easier) to predict than the training mix. Running the priors on
each source of the training set, on images held out of it and on the validation set tells the two
apart. Codes are extracted afresh (random crops, like ``vqcodec extract-codes``) into a temporary
folder; the NLL is the float prior's mean over every tile (the prior's own tile size) of every crop.

    python benchmarks/prior_by_folder.py --vqvae runs/vqvae/model.safetensors \\
        --prior-top runs/top/model.safetensors --prior-bottom runs/bottom/model.safetensors \\
        photos/city photos/nature val_photos
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from vqcodec.train.code_datasets import extract_codes, load_codes
from vqcodec.train.evaluation import code_bits, unigram_entropy
from vqcodec.vqvae import LEVEL_NAMES
from vqcodec.zoo.files import load_prior, load_vqvae


def folder_bits(vqvae_path: Path, priors: dict[str, Path], folders: list[Path], crops: int, seed: int) -> list[dict]:
    """Per folder: images, crops and, per level name, NLL and unigram entropy in bits per code."""
    vqvae = load_vqvae(vqvae_path)
    names = LEVEL_NAMES[vqvae.config.levels]
    loaded = {name: load_prior(priors[name]) for name in names}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, folder in enumerate(folders):
            meta = extract_codes(vqvae, folder, Path(tmp) / str(i), crops_per_image=crops, seed=seed)
            maps, labels, _ = load_codes(Path(tmp) / str(i))
            row = {"folder": str(folder), "images": meta["images"], "crops": crops}
            for level, name in enumerate(names):
                prior, cfg = loaded[name]
                with torch.no_grad():
                    row[name] = code_bits(prior.eval(), maps, labels, level, int(cfg.get("tile", 32)))
                row[f"{name}_unigram"] = unigram_entropy(maps[level], vqvae.config.num_codes)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="+", help="image folders to compare")
    ap.add_argument("--vqvae", type=Path, required=True)
    ap.add_argument("--prior-top", type=Path, required=True)
    ap.add_argument("--prior-middle", type=Path, default=None, help="3-level models only")
    ap.add_argument("--prior-bottom", type=Path, required=True)
    ap.add_argument("--crops", type=int, default=2, help="random 256x256 crops per image")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    priors = {"top": args.prior_top, "middle": args.prior_middle, "bottom": args.prior_bottom}
    rows = folder_bits(args.vqvae, priors, args.folders, args.crops, args.seed)
    names = [n for n in ("top", "middle", "bottom") if n in rows[0]]
    print(f"{'folder':<40}{'images':>7}" + "".join(f"{n + ' NLL':>12}{n + ' H':>10}" for n in names))
    for r in rows:
        print(f"{r['folder']:<40}{r['images']:>7}"
              + "".join(f"{r[n]:>12.3f}{r[n + '_unigram']:>10.3f}" for n in names))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
