"""``vqcodec demo``: the main job end to end on the bundled sample with the shipped model."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import click

from .main import friendly_errors, main
from .options import use_threads

# found without importing vqcodec (and torch), so `vqcodec --help` stays quick
SAMPLE = Path(importlib.util.find_spec("vqcodec").origin).parent / "samples" / "endeavour.png"


@main.command()
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=SAMPLE,
              show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"), show_default=True)
@friendly_errors
def demo(image: Path, out_dir: Path) -> None:
    """Compress an image with the default model, decompress it, print bpp and PSNR."""
    from vqcodec.atomic import atomic_write_bytes
    from vqcodec.codec import compress, decompress_image
    from vqcodec.imageio import read_image, write_image
    from vqcodec.metrics import psnr
    from vqcodec.zoo.codec_model import load_codec_model

    use_threads(None)  # the free cores, as compress and decompress choose them
    model = load_codec_model()
    original = read_image(image)
    h, w = original.pixels.shape[:2]
    t0 = time.perf_counter()
    data = compress(original, model)
    t1 = time.perf_counter()
    restored = decompress_image(data, model)
    t2 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / (image.stem + ".vqc"), data, force=True)
    write_image(out_dir / (image.stem + ".decoded.png"), restored, force=True)
    click.echo(f"model      : {model.name} ({model.fingerprint.hex()})")
    click.echo(f"image      : {image} ({w}x{h})")
    click.echo(f"compressed : {len(data)} bytes -> {out_dir / (image.stem + '.vqc')}")
    click.echo(f"bpp        : {8 * len(data) / (w * h):.4f}")
    click.echo(f"PSNR       : {psnr(original.pixels, restored.pixels):.2f} dB")
    click.echo(f"time       : encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s")
