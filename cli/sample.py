"""``vqcodec sample``: images drawn from a codec model's priors, optionally classifier-filtered."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .main import friendly_errors, main
from .options import DEVICE, FORCE, MODEL, MODEL_DIR


@main.command()
@MODEL
@MODEL_DIR
@click.option("--n", "n", type=int, default=16, show_default=True, help="Number of images.")
@click.option("--out", "-o", "out", required=True,
              help="A folder for one PNG per sample, or an image file name (.png, .jpg, .tif, .webp, .bmp) for "
                   "one grid image in that format.")
@click.option("--size", type=int, default=256, show_default=True,
              help="Image side in pixels; a multiple of the model stride.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Divides the prior logits: below 1 gives more typical, less varied samples.")
@click.option("--class", "label", type=int, default=None, help="Class to sample (class-conditional models).")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed gives the same images.")
@click.option("--classifier", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TorchScript classifier (float images (B,3,H,W) in [0,1] -> logits) for rejection sampling.")
@click.option("--target-class", type=int, default=None, help="Class the classifier should find (with --classifier).")
@click.option("--acceptance", type=float, default=0.1, show_default=True,
              help="Fraction of candidates kept: ceil(n / acceptance) are drawn (with --classifier).")
@click.option("--batch", type=int, default=16, show_default=True, help="Samples drawn together (speed only).")
@DEVICE
@FORCE
@friendly_errors
def sample(model: str | None, model_dirs: tuple[Path, ...], n: int, out: str, size: int, temperature: float,
           label: int | None, seed: int, classifier: Path | None, target_class: int | None, acceptance: float,
           batch: int, device: str, force: bool) -> None:
    """Sample images: top codes first, then each lower level, then the VQ-VAE decoder.

    \b
    vqcodec sample --n 16 --out grid.png --size 64
    vqcodec sample --model codec.safetensors --n 8 --out samples/ --temperature 0.8 --class 3
    vqcodec sample --n 4 --out best.png --classifier clf.pt --target-class 3 --acceptance 0.1
    """
    from vqcodec.atomic import output_kind
    from vqcodec.errors import VQCodecError
    from vqcodec.imageio import ImageData, format_of_suffix, write_image
    from vqcodec.sampling import image_grid, rejection_sample, sample_images
    from vqcodec.zoo.codec_model import load_codec_model

    if (classifier is None) != (target_class is None):
        raise VQCodecError("--classifier and --target-class go together")
    grid = format_of_suffix(out) is not None  # an image name: one grid image; anything else: a folder
    if grid and Path(out).is_dir():
        raise VQCodecError(f"{out} is a folder; give the grid image another name, or drop the extension")
    targets = [Path(out)] if grid else [Path(out) / f"sample_{i:04d}.png" for i in range(max(n, 0))]
    for path in targets:
        if os.path.lexists(path):
            output_kind(path, force=force)  # exists without --force, a folder, a dangling link: refused now
    m = load_codec_model(model, device, model_dirs)
    try:  # fail early, not after sampling
        (targets[0].parent if grid else Path(out)).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VQCodecError(f"cannot create the folder for {out}: {e.strerror or e}") from None
    if classifier is not None:
        result = rejection_sample(m, classifier, target_class, n, acceptance, height=size, width=size,
                                  temperature=temperature, label=label, seed=seed, batch=batch)
        images = result.images
        click.echo(f"acceptance rate: {result.acceptance:.4f} (kept {n} of {result.candidates} candidates)")
        click.echo(f"target-class probability of the kept samples: min {result.scores.min():.4f}, "
                   f"mean {result.scores.mean():.4f}, max {result.scores.max():.4f}")
    else:
        images = sample_images(m, n, size, size, temperature=temperature, label=label, seed=seed, batch=batch)
    if grid:
        write_image(targets[0], ImageData(image_grid(images), 8, None), force=force)
    else:
        for path, img in zip(targets, images):
            write_image(path, ImageData(img, 8, None), force=force)
    click.echo(f"{n} samples of {size}x{size} from '{m.name}' -> {out}")
