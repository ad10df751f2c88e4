"""``vqcodec compress``, ``decompress`` and ``info``.

The rules for inputs and outputs (stdout, --force, devices, FIFOs and symbolic links, folders,
collisions, --skip-existing, --fail-fast, exit statuses) are written down in docs/cli.md; every
output is checked before any work starts, and a batch reports a bad file and goes on.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from tqdm import tqdm

from vqcodec.errors import VQCodecError
from vqcodec.imageio import FORMAT_SUFFIXES, FORMATS, format_names  # torch-free: only the lists are read here

from .main import friendly_errors, main
from .options import DEVICE, FORCE, MODEL, MODEL_DIR, QUALITY, THREADS, use_threads

if TYPE_CHECKING:
    from vqcodec.zoo.registry import Rung

STDIN = "-"
VQC = ".vqc"

SKIP_EXISTING = click.option(
    "--skip-existing", is_flag=True,
    help="Leave outputs that already exist alone and do the rest (to finish an interrupted batch).",
)
FAIL_FAST = click.option(
    "--fail-fast", is_flag=True,
    help="Stop at the first file that fails (by default a batch reports it, goes on, and exits 1 at the end).",
)


@dataclass(frozen=True)
class Job:
    src: str  # an input file, or '-' for stdin
    dst: str  # an output file, or '-' for stdout


# -- reading and writing ------------------------------------------------------------------------------------


def _read_input(src: str) -> bytes:
    """All bytes of an input: a file, a pipe or device (``<(cmd)``, /dev/stdin), or '-' for stdin."""
    if src == STDIN:
        if sys.stdin is None:
            raise VQCodecError("cannot read stdin: it is closed")
        try:
            return sys.stdin.buffer.read()
        except (OSError, ValueError) as e:
            raise VQCodecError(f"cannot read stdin: {e}") from None
    try:
        if os.path.isdir(src):
            raise VQCodecError(f"{src} is a directory, not a file")
        with open(src, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise VQCodecError(f"{src}: no such file") from None
    except OSError as e:
        raise VQCodecError(f"cannot read {src}: {e.strerror or e}") from None


def _named(data: bytes, src: str) -> io.BytesIO:
    """The input's bytes as a stream that carries its name, so that errors name the file."""
    stream = io.BytesIO(data)
    stream.name = "<stdin>" if src == STDIN else src
    return stream


def _write_stdout(data: bytes) -> None:
    out = sys.stdout
    if out is None:
        raise VQCodecError("cannot write to stdout: it is closed")
    try:
        view = memoryview(data)
        while len(view):  # an unbuffered stdout ($PYTHONUNBUFFERED) may take part: a reader gone shows next time
            view = view[out.buffer.write(view) or 0:]
        out.buffer.flush()
    except BrokenPipeError:
        # the reader went away; point stdout at /dev/null so the interpreter's last flush is quiet
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        except (OSError, ValueError):
            pass
        raise VQCodecError("cannot write to stdout: the pipe was closed by its reader") from None
    except (OSError, ValueError) as e:
        raise VQCodecError(f"cannot write to stdout: {e}") from None


def _write_output(dst: str, data: bytes, force: bool) -> None:
    from vqcodec.atomic import atomic_write_bytes

    if dst == "-":
        _write_stdout(data)
        return
    try:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)  # a folder of the batch's output tree
    except OSError as e:
        raise VQCodecError(f"cannot create the folder of {dst}: {e.strerror or e}") from None
    atomic_write_bytes(dst, data, force=force)


def _about(err: VQCodecError, src: str) -> str:
    """The error's message, naming the input it is about."""
    name = "<stdin>" if src == STDIN else src
    text = str(err)
    return text if name in text else f"{name}: {text}"


# -- planning: inputs to outputs, every output checked before any work ---------------------------------------


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _identity(src: str) -> tuple[int, int] | None:
    """(device, inode) of an input, to recognise an output that is the same file."""
    if src == STDIN:
        try:
            st = os.fstat(sys.stdin.fileno())
        except (AttributeError, OSError, ValueError):
            return None
    else:
        st = _stat(src)
    return (st.st_dev, st.st_ino) if st is not None and stat.S_ISREG(st.st_mode) else None


def _expand(inputs: tuple[str, ...], pattern: set[str]) -> tuple[list[tuple[str, Path]], bool]:
    """Input files with the path each keeps under an output folder, and whether there are several
    inputs (several arguments, or any folder)."""
    if STDIN in inputs and len(inputs) > 1:
        raise VQCodecError("'-' (stdin) can only be the only input")
    files: list[tuple[str, Path]] = []
    several = len(inputs) > 1
    for src in inputs:
        if src == STDIN:
            files.append((src, Path("stdin")))
            continue
        st = _stat(src)
        if st is None:
            if os.path.lexists(src):
                raise VQCodecError(f"cannot read {src}: it is a dangling symbolic link")
            raise VQCodecError(f"{src}: no such file or folder")
        if stat.S_ISDIR(st.st_mode):
            several = True
            root = Path(src)
            found = sorted(f for f in root.rglob("*") if f.suffix.lower() in pattern and f.is_file())
            files += [(str(f), f.relative_to(root)) for f in found]
        else:
            files.append((src, Path(Path(src).name)))
    if not files:
        raise VQCodecError(f"no input files (a folder is searched for {', '.join(sorted(pattern))} files)")
    return files, several


def _plan(inputs: tuple[str, ...], output: str | None, suffix: str, pattern: set[str], force: bool,
          skip_existing: bool) -> tuple[list[Job], list[Job]]:
    """(jobs to do, jobs skipped because their output exists) for these inputs and ``-o``.

    Refuses, before any work: '-' among several inputs; several inputs into '-' or into a name
    that is a file or looks like one; two inputs that would write the same output; an output that
    is an input; an existing output without --force (unless --skip-existing); an output that is a
    folder, a dangling link or a block device."""
    from vqcodec.atomic import output_kind
    from vqcodec.imageio import IMAGE_SUFFIXES

    files, several = _expand(inputs, pattern)
    jobs: list[Job] = []
    if not several:
        src = files[0][0]
        if output is None:
            st = _stat(src) if src != STDIN else None
            if src == STDIN:
                dst = "-"
            elif st is not None and not stat.S_ISREG(st.st_mode):
                raise VQCodecError(f"{src} is not a regular file (a pipe or device); name the output with -o")
            else:
                dst = str(Path(src).with_suffix(suffix))
        elif output != "-" and (os.path.isdir(output) or output.endswith(("/", os.sep))):  # a folder, maybe new
            dst = str(Path(output) / (files[0][1].stem + suffix))
        else:
            dst = output
        jobs.append(Job(src, dst))
    else:
        if output == "-":
            raise VQCodecError("several inputs cannot all be written to stdout ('-'); give -o a folder")
        if output is not None:
            out_st = _stat(output)
            if out_st is not None and not stat.S_ISDIR(out_st.st_mode):
                raise VQCodecError(f"-o {output} is not a folder; several inputs need -o to name a folder")
            if out_st is None and Path(output).suffix.lower() in IMAGE_SUFFIXES | {VQC}:
                raise VQCodecError(f"-o {output} looks like a file name; several inputs need -o to name a folder "
                                   "(a name without an image or .vqc extension)")
        for src, rel in files:
            if output is None:
                jobs.append(Job(src, str(Path(src).with_suffix(suffix))))
            else:
                jobs.append(Job(src, str(Path(output) / rel.with_suffix(suffix))))

    by_dst: dict[str, str] = {}
    for job in jobs:
        if job.dst == "-":
            continue
        key = os.path.normcase(os.path.abspath(job.dst))
        if key in by_dst:
            raise VQCodecError(f"{by_dst[key]} and {job.src} would both be written to {job.dst}; "
                               "rename one or put them in separate folders")
        by_dst[key] = job.src
    sources = {_identity(j.src) for j in jobs} - {None}
    todo, skipped = [], []
    for job in jobs:
        if job.dst == "-":
            todo.append(job)
            continue
        target = _stat(job.dst)
        if target is not None and (target.st_dev, target.st_ino) in sources:
            raise VQCodecError(f"{job.dst} is an input of this command; it would be destroyed (even with --force "
                               "it is not overwritten)")
        if os.path.lexists(job.dst):
            if skip_existing:
                skipped.append(job)
                continue
            kind = output_kind(job.dst, force=force)
        elif output is None or (not several and os.path.isdir(Path(job.dst).parent)):
            kind = output_kind(job.dst, force=force)
        elif not several and not output.endswith(("/", os.sep)):
            raise VQCodecError(f"cannot write {job.dst}: folder {Path(job.dst).parent} does not exist")
        else:
            kind = "new"  # in a folder the batch creates
        if kind != "through":
            _check_writable(job.dst)
        todo.append(job)
    return todo, skipped


def _check_writable(dst: str) -> None:
    """Refuse an output whose folder cannot be written (read-only, no permission) now, not after the
    whole encode. The folder is the target's for a link, the first existing one for a folder the batch
    creates."""
    folder = Path(os.path.realpath(dst)).parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VQCodecError(f"cannot write {dst}: folder {folder} is not writable")


def _run(jobs: list[Job], skipped: list[Job], what: str, work, fail_fast: bool) -> None:
    """Do ``work(job)`` for every job. A single file's error is the command's error; in a batch a
    failing file is reported (naming it) and the rest go on, unless ``fail_fast``."""
    single = len(jobs) + len(skipped) == 1
    failed = 0
    bar = tqdm(jobs, disable=len(jobs) <= 1 or not sys.stderr.isatty(), desc=what, file=sys.stderr)
    for job in bar:
        try:
            work(job)
        except VQCodecError as err:
            if single or fail_fast:
                raise VQCodecError(_about(err, job.src)) from None
            failed += 1
            tqdm.write(f"vqcodec: error: {_about(err, job.src)}", file=sys.stderr)
    if skipped:
        tqdm.write(f"vqcodec: skipped {len(skipped)} input(s) whose output exists", file=sys.stderr)
    if failed:
        raise VQCodecError(f"{failed} of {len(jobs)} files failed (see above)")


# -- commands -------------------------------------------------------------------------------------------------


def coding_options(fn):
    """The options compress and decompress share (and their error handling)."""
    for option in reversed([MODEL, MODEL_DIR, DEVICE, THREADS, FORCE, SKIP_EXISTING, FAIL_FAST]):
        fn = option(fn)
    return friendly_errors(fn)


def _exclusive(**given: object) -> None:
    """Options that exclude each other are bad usage (exit 2), found before any work."""
    names = [f"--{name.replace('_', '-')}" for name, value in given.items() if value]
    if len(names) > 1:
        raise click.UsageError(f"{' and '.join(names)} exclude each other; choose one")


def _tile(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A tile side that no model can use is bad usage (exit 2); the model checks the rest."""
    from vqcodec.coding.tiles import MAX_TILE

    if value is not None and (value < 4 or value > MAX_TILE or value & (value - 1)):
        raise click.BadParameter(f"a tile side is a power of two from 4 to {MAX_TILE}, not {value}")
    return value


def _region(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int, int, int] | None:
    """X,Y,W,H as four integers, W and H at least 1 (whether it lies inside the image is for the file)."""
    if value is None:
        return None
    try:
        x, y, w, h = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"takes X,Y,W,H in pixels (four integers), not '{value}'") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise click.BadParameter(f"X and Y must be at least 0, W and H at least 1, not '{value}'")
    return x, y, w, h


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", "output", default=None,
              help="Output file ('-' for stdout); with several inputs or a folder, a folder (it keeps the inputs' "
                   "paths under a folder input). Default: next to each input, with the .vqc extension.")
@click.option("--tile", type=int, default=None, callback=_tile,
              help="Tile side in bottom codes (power of two; default: the model's, 32). Bigger tiles save a "
                   "few percent of bits and decode slower.")
@click.option("--rdo", type=click.FloatRange(min=0.0), default=None, metavar="LAMBDA",
              help="Weight of a bottom code's bits against its distance to the image's latent: the encoder "
                   "takes a slightly farther codeword where it is much cheaper (0.02 is tuned: about 4% fewer "
                   "bits for 0.1 dB on BSD photos; default 0: the nearest codewords). Decoding is unaffected.")
@QUALITY
@click.option("--fast", is_flag=True,
              help="Take the quality from the fast ladder: multi-pass priors that decode in about a third of "
                   "the time for about 5% more bits ('vqcodec models' lists both ladders).")
@coding_options
def compress(inputs: tuple[str, ...], output: str | None, tile: int | None, rdo: float | None, rung: Rung | None,
             fast: bool, model: str | None, model_dirs: tuple[Path, ...], device: str, threads: int | None,
             force: bool, skip_existing: bool, fail_fast: bool) -> None:
    """Compress images (PNG, JPEG, TIFF, WebP, BMP, GIF; '-' reads stdin) to .vqc files.

    \b
    vqcodec compress photo.png -o photo.vqc
    vqcodec compress photo.png -o small.vqc --quality 1
    vqcodec compress photo.png -o quick.vqc --fast
    vqcodec compress photos/ -o compressed/
    cat photo.png | vqcodec compress - -o - > photo.vqc

    \b
    Outputs (details: docs/cli.md): an existing file is replaced only with --force, and never
    when it is one of the inputs; files are written atomically, so an interrupted run leaves no
    half-written file. '-' is stdout; devices and FIFOs (/dev/null, a named pipe) are written
    through; a symbolic link is followed. Every output is checked before any work starts. In a
    batch a bad file is reported and the others go on; the exit status is 1 if any failed.
    """
    _exclusive(force=force, skip_existing=skip_existing)
    _exclusive(quality=rung, model=model)
    _exclusive(fast=fast, model=model)
    if fast:  # the fast ladder's rung of that quality (registry.fast_rung), still before any heavy import
        from vqcodec.zoo.registry import fast_rung

        try:
            rung = fast_rung(rung)
        except VQCodecError as err:
            raise click.BadParameter(str(err), param_hint="'--fast'") from None
    from vqcodec.imageio import IMAGE_SUFFIXES

    if len(inputs) == 2 and output is None and not Path(inputs[1]).is_dir() and Path(inputs[1]).suffix == VQC:
        inputs, output = inputs[:1], inputs[1]
    model, scale = (rung.model, rung.scale) if rung else (model, 1.0)
    jobs, skipped = _plan(inputs, output, VQC, IMAGE_SUFFIXES, force, skip_existing)
    if not jobs:
        _run(jobs, skipped, "compress", None, fail_fast)
        return
    from vqcodec.codec import compress as compress_image
    from vqcodec.imageio import read_image
    from vqcodec.zoo.codec_model import load_codec_model

    use_threads(threads)
    codec_model = load_codec_model(model, device, model_dirs)

    def work(job: Job) -> None:
        image = read_image(_named(_read_input(job.src), job.src))
        data = compress_image(image, codec_model, tile=tile, scale=scale, rdo=rdo)
        _write_output(job.dst, data, force)
        if job.dst != "-" and len(jobs) == 1:
            click.echo(f"{job.src} -> {job.dst}: {len(data)} bytes", err=True)

    _run(jobs, skipped, "compress", work, fail_fast)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", "output", default=None,
              help=f"Output image, its format from the extension: {format_names()}; '-' writes PNG (or --format) "
                   "to stdout; with several inputs or a folder, a folder. Default: next to each input.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format for stdout or a folder (default png); with -o FILE it must match FILE's extension.")
@click.option("--region", "box", default=None, metavar="X,Y,W,H", callback=_region,
              help="Decode only this rectangle (pixels); only the tiles under it are decoded, and its pixels "
                   "are exactly those of the full image.")
@click.option("--salvage", is_flag=True,
              help="Decode what is intact when tile payloads are damaged or cut off (their area is left without "
                   "image content) instead of refusing the file; a warning names the damaged tiles. A file "
                   "with no intact tile is still an error.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Refuse files that claim more pixels than N (default: the encoder's limit, twice Pillow's "
                   "MAX_IMAGE_PIXELS: 178,956,970). Raise it only for files you trust.")
@coding_options
def decompress(inputs: tuple[str, ...], output: str | None, fmt: str | None, box: tuple[int, int, int, int] | None,
               salvage: bool, max_pixels: int | None, model: str | None, model_dirs: tuple[Path, ...], device: str,
               threads: int | None, force: bool, skip_existing: bool, fail_fast: bool) -> None:
    """Decompress .vqc files to images.

    \b
    vqcodec decompress photo.vqc -o photo.png
    vqcodec decompress compressed/ -o restored/ --format tiff

    \b
    Outputs follow the same rules as for compress (docs/cli.md). A format that cannot hold the
    file (16 bits in WebP, JPEG or BMP; WebP above 16383 pixels) is refused before decoding.
    """
    _exclusive(force=force, skip_existing=skip_existing)
    from vqcodec.imageio import format_of_suffix

    suffix = FORMAT_SUFFIXES[fmt or "png"][0]
    if len(inputs) == 2 and output is None and Path(inputs[1]).suffix and Path(inputs[1]).suffix != VQC:
        inputs, output = inputs[:1], inputs[1]
    jobs, skipped = _plan(inputs, output, suffix, {VQC}, force, skip_existing)
    formats = {}
    for job in jobs:
        if job.dst == "-":
            formats[job] = fmt or "png"
            continue
        named = format_of_suffix(job.dst)
        if fmt is not None and named is not None and named != fmt:
            raise VQCodecError(f"{job.dst} has the extension of {named.upper()}, but --format is {fmt}; "
                               "leave --format out or make them agree")
        if fmt is None and named is None:
            raise VQCodecError(f"cannot tell the image format of {job.dst!r}: name it with the extension of one "
                               f"of {format_names()}, or use --format")
        formats[job] = fmt or named
    from vqcodec.codec import damage_message, decompress_image
    from vqcodec.coding.bitstream import unpack
    from vqcodec.imageio import check_encodable, encode_image

    if jobs:
        use_threads(threads)

    def work(job: Job) -> None:
        data = _read_input(job.src)
        head = unpack(data, salvage=True).header  # cheap: checks the output format before decoding
        width, height = (box[2], box[3]) if box else (head.width, head.height)
        check_encodable(formats[job], width, height, head.bit_depth)
        image = decompress_image(data, model, device, region=box, salvage=salvage, model_dirs=model_dirs,
                                 max_pixels=max_pixels)
        if image.damaged_tiles:
            where = "<stdin>" if job.src == STDIN else job.src
            tqdm.write(f"vqcodec: warning: {where}: {damage_message(image.damaged_tiles)}", file=sys.stderr)
        _write_output(job.dst, encode_image(image, formats[job]), force)

    _run(jobs, skipped, "decompress", work, fail_fast)


@main.command()
@click.argument("file")
@click.option("--model", default=None, metavar="NAME|FILE",
              help="Also recognise this codec model (a name from 'vqcodec models' or a codec-model file) as the one "
                   "that wrote FILE, besides the installed ones; it is loaded only when given.")
@MODEL_DIR
@friendly_errors
def info(file: str, model: str | None, model_dirs: tuple[Path, ...]) -> None:
    """Show what a .vqc file's header says: size, bit depth, bpp, model, tiles (and which are damaged).

    Reads only the header and the checksums: no model is loaded unless --model names one."""
    from vqcodec.coding.bitstream import unpack
    from vqcodec.zoo.registry import ladder, list_models, rung_of

    data = _read_input(file)
    try:
        stream = unpack(data, salvage=True)
    except VQCodecError as err:
        raise VQCodecError(_about(err, file)) from None
    head = stream.header
    lines = {
        "format version": head.version,
        "size": f"{head.width} x {head.height}",
        **({"coded at": f"{head.coded_width} x {head.coded_height}"} if head.coded_size else {}),
        "channels": f"{head.channels} ({'gray' if head.channels == 1 else 'RGB'})",
        "bit depth": head.bit_depth,
        "bytes": len(data),
        "bits per pixel": f"{8 * len(data) / (head.width * head.height):.4f}",
        "levels": head.levels,
        "tile": f"{head.tile_size} bottom codes",
        "tiles": len(stream.tiles),
        "model fingerprint": head.model_fingerprint.hex(),
        "ICC profile": f"{len(head.icc_profile)} bytes" if head.icc_profile else "none",
    }
    if stream.damaged:
        lines["damaged tiles"] = f"{len(stream.damaged)} ({', '.join(map(str, stream.damaged))})"
    known = {e.fingerprint: e.name for e in list_models(model_dirs)}
    rungs = ladder()
    if model is not None:
        from vqcodec.zoo.codec_model import load_codec_model

        given = load_codec_model(model, "cpu", model_dirs)
        known[given.fingerprint.hex()] = given.name
    lines["model"] = known.get(head.model_fingerprint.hex(), "not installed (see 'vqcodec models')")
    rung = rung_of(head.model_fingerprint.hex(), head.width, head.height, head.coded_size)
    fast = rung is not None and rung in ladder("fast")
    lines["quality"] = (f"{rung.quality} of {len(rungs)} ({rung.name}{', the fast ladder' if fast else ''})" if rung
                        else "- (not a rung of the quality ladder)")
    for key, value in lines.items():
        click.echo(f"{key:>18}: {value}")
    if stream.damaged:
        click.echo(f"vqcodec: warning: {file}: {len(stream.damaged)} damaged tile(s); decompress refuses the file, "
                   "decompress --salvage decodes the others", err=True)
