"""``vqcodec compress``, ``decompress`` and ``info``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from vqcodec.errors import VQCodecError

from .main import friendly_errors, main
from .options import DEVICE, FORCE, MODEL, MODEL_DIR


def _read_input(src: str) -> bytes:
    if src == "-":
        return sys.stdin.buffer.read()
    path = Path(src)
    if not path.is_file():
        raise VQCodecError(f"input not found or not a file: {src}")
    return path.read_bytes()


def _write_output(dst: str, data: bytes, force: bool) -> None:
    from vqcodec.atomic import atomic_write_bytes

    if dst == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write_bytes(dst, data, force=force)


def _inputs_and_outputs(inputs: tuple[str, ...], output: str | None, suffix: str) -> list[tuple[str, str]]:
    """Pair inputs with outputs: IN OUT, or several inputs / a folder into an --out-dir."""
    from vqcodec.imageio import IMAGE_SUFFIXES

    expanded: list[str] = []
    for src in inputs:
        p = Path(src)
        if p.is_dir():
            pattern = IMAGE_SUFFIXES if suffix == ".vqc" else {".vqc"}
            expanded += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in pattern and f.is_file())
        else:
            expanded.append(src)
    if not expanded:
        raise VQCodecError("no input files")
    if output is None:
        if expanded == ["-"]:
            return [("-", "-")]  # a pipe in, a pipe out
        return [(src, str(Path(src).with_suffix(suffix))) for src in expanded]
    if len(expanded) == 1 and not Path(output).is_dir():
        return [(expanded[0], output)]
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [(src, str(out_dir / (Path(src).stem + suffix))) for src in expanded]


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", "output", default=None,
              help="Output file ('-' for stdout), or a folder when there are several inputs.")
@click.option("--tile", type=int, default=None,
              help="Tile side in bottom codes (power of two; default: the model's, 32). Bigger tiles save a "
                   "few percent of bits and decode slower.")
@MODEL
@MODEL_DIR
@DEVICE
@FORCE
@friendly_errors
def compress(inputs: tuple[str, ...], output: str | None, tile: int | None, model: str | None,
             model_dirs: tuple[Path, ...], device: str, force: bool) -> None:
    """Compress images (PNG, JPEG, TIFF, WebP, BMP; '-' reads stdin) to .vqc files.

    \b
    vqcodec compress photo.png -o photo.vqc
    vqcodec compress photos/ -o compressed/
    cat photo.png | vqcodec compress - -o - > photo.vqc
    """
    from vqcodec.codec import compress as compress_image
    from vqcodec.zoo.codec_model import load_codec_model

    if len(inputs) == 2 and output is None and not Path(inputs[1]).is_dir() and Path(inputs[1]).suffix == ".vqc":
        inputs, output = inputs[:1], inputs[1]
    pairs = _inputs_and_outputs(inputs, output, ".vqc")
    codec_model = load_codec_model(model, device, model_dirs)
    for src, dst in tqdm(pairs, disable=len(pairs) == 1, desc="compress", file=sys.stderr):
        data = compress_image(_read_input(src), codec_model, tile=tile)
        _write_output(dst, data, force)
        if dst != "-" and len(pairs) == 1:
            click.echo(f"{src} -> {dst}: {len(data)} bytes", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", "output", default=None,
              help="Output image (format from the extension: png, tif/tiff, webp, bmp; '-' writes PNG to "
                   "stdout), or a folder when there are several inputs.")
@click.option("--format", "fmt", type=click.Choice(["png", "tiff", "webp", "bmp"]), default=None,
              help="Output format for stdout or a folder (default png).")
@click.option("--region", default=None, metavar="X,Y,W,H",
              help="Decode only this rectangle (pixels); only the tiles under it are decoded.")
@click.option("--salvage", is_flag=True,
              help="Decode what is intact when tile payloads are damaged (their area is left without "
                   "image content) instead of refusing the file; a warning names the damaged tiles.")
@MODEL
@MODEL_DIR
@DEVICE
@FORCE
@friendly_errors
def decompress(inputs: tuple[str, ...], output: str | None, fmt: str | None, region: str | None,
               salvage: bool, model: str | None, model_dirs: tuple[Path, ...], device: str, force: bool) -> None:
    """Decompress .vqc files to images.

    \b
    vqcodec decompress photo.vqc -o photo.png
    vqcodec decompress compressed/ -o restored/ --format tiff
    """
    from vqcodec.codec import damage_message, decompress_image
    from vqcodec.imageio import encode_image, format_from_path

    suffix = "." + (fmt or "png")
    if len(inputs) == 2 and output is None and Path(inputs[1]).suffix and Path(inputs[1]).suffix != ".vqc":
        inputs, output = inputs[:1], inputs[1]
    box = _parse_region(region) if region else None
    pairs = _inputs_and_outputs(inputs, output, suffix)
    for src, dst in tqdm(pairs, disable=len(pairs) == 1, desc="decompress", file=sys.stderr):
        image = decompress_image(_read_input(src), model, device, region=box, salvage=salvage,
                                 model_dirs=model_dirs)
        if image.damaged_tiles:
            where = "" if src == "-" or len(pairs) == 1 else f"{src}: "
            click.echo(f"vqcodec: warning: {where}{damage_message(image.damaged_tiles)}", err=True)
        out_fmt = fmt or ("png" if dst == "-" else format_from_path(dst))
        _write_output(dst, encode_image(image, out_fmt), force)


def _parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise VQCodecError(f"--region takes X,Y,W,H in pixels, not '{text}'") from None
    return x, y, w, h


@main.command()
@click.argument("file")
@MODEL
@MODEL_DIR
@friendly_errors
def info(file: str, model: str | None, model_dirs: tuple[Path, ...]) -> None:
    """Show what a .vqc file's header says: size, bit depth, bpp, model, tiles."""
    from vqcodec.coding.bitstream import read_header
    from vqcodec.zoo.registry import list_models

    data = _read_input(file)
    head = read_header(data)
    lines = {
        "format version": head.version,
        "size": f"{head.width} x {head.height}",
        "channels": f"{head.channels} ({'gray' if head.channels == 1 else 'RGB'})",
        "bit depth": head.bit_depth,
        "bytes": len(data),
        "bits per pixel": f"{8 * len(data) / (head.width * head.height):.4f}",
        "levels": head.levels,
        "tile": f"{head.tile_size} bottom codes",
        "model fingerprint": head.model_fingerprint.hex(),
        "ICC profile": f"{len(head.icc_profile)} bytes" if head.icc_profile else "none",
    }
    known = {e.fingerprint: e.name for e in list_models(model_dirs)}
    if model is not None:
        from vqcodec.zoo.codec_model import load_codec_model

        given = load_codec_model(model, "cpu", model_dirs)
        known[given.fingerprint.hex()] = given.name
    lines["model"] = known.get(head.model_fingerprint.hex(), "not installed (see 'vqcodec models')")
    for key, value in lines.items():
        click.echo(f"{key:>18}: {value}")
