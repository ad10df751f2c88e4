"""``vqcodec benchmark``: rate-distortion curves of vqcodec and classical codecs in one run."""

from __future__ import annotations

from pathlib import Path

import click

from .main import friendly_errors, main
from .options import FORCE, MODEL_DIR


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--codecs", default="vqcodec,jpeg,webp,avif,jp2,jxl", show_default=True,
              help="Comma-separated codecs to run; one that is not available here is skipped with a note.")
@click.option("--quality", "qualities", multiple=True, metavar="CODEC=Q1,Q2,...",
              help="Replace a classical codec's sweep, e.g. --quality jpeg=10,50,90 (repeatable).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Folder for the result files, plot and summary.")
@click.option("--reference", "references", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A CompressAI result JSON (e.g. results/image/kodak/*.json) to overlay on the plot and compare "
                   "in the BD table, without running it (repeatable).")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use only the first N images.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for torch, libavif and libjxl (times are per image with this many threads).")
@click.option("--model", "models", multiple=True, metavar="NAME|FILE",
              help="A vqcodec model to run, by name or file: one operating point each (repeatable; default: "
                   "every model of the shipped quality ladder).")
@click.option("--cvvdp/--no-cvvdp", default=None,
              help="The perceptual metric ColorVideoVDP (JOD) in the results, summary and plot. Default: on when "
                   "it is installed (the [bench] extra), otherwise skipped with a note; --cvvdp makes it required.")
@MODEL_DIR
@FORCE
@friendly_errors
def benchmark(folder: Path, codecs: str, qualities: tuple[str, ...], out: Path, references: tuple[Path, ...],
              max_images: int | None, threads: int, models: tuple[str, ...], cvvdp: bool | None,
              model_dirs: tuple[Path, ...], force: bool) -> None:
    """Measure rate and distortion of vqcodec and classical codecs on a folder of images.

    Writes, per codec, NAME.json (CompressAI's result schema) and NAME-images.csv (every image),
    plus rd.png (PSNR, MS-SSIM in dB and ColorVideoVDP in JOD against bpp) and summary.md (BD-rate
    and BD-PSNR of vqcodec against each codec, PSNR and ColorVideoVDP at fixed rates, median times,
    bits per code of each level). Needs the optional extra: pip install 'vqcodec[bench]'.

    \b
    vqcodec benchmark ../shared/datasets/kodak --out results/
    vqcodec benchmark photos/ --codecs vqcodec,jpeg --quality jpeg=5,20,50,80 --max-images 4
    vqcodec benchmark photos/ --reference compressai/results/image/kodak/compressai-mbt2018_mse_cpu.json
    """
    from vqcodec.bench.benchmark import benchmark as run_benchmark
    from vqcodec.bench.benchmark import parse_codecs

    result = run_benchmark(folder, out, parse_codecs(codecs), qualities, references, models, model_dirs,
                           max_images, threads, force, log=lambda msg: click.echo(msg, err=True), cvvdp=cvvdp)
    click.echo(result.summary)
    click.echo(f"wrote {len(result.files)} files to {out}", err=True)
