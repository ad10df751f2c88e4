"""compress / decompress: image -> VQ-VAE codes -> integer priors -> range coder -> `.vqc` bytes.

The stages live in their rooms (``vqvae``, ``priors``, ``coding``, ``zoo``); this module is the
public entry point that strings them together. Code maps are coded in tiles (``coding.tiles``): a
region decodes only the tiles under it, and a damaged tile does not take the others with it: the
container checksums each tile's payload, a damaged one is refused by default, and with
``salvage=True`` it is left undecoded (its codes stay 0) while every other tile decodes exactly as
from the intact file. Format version 5 also records a checksum of each tile's codes, which the decoder
checks after decoding (``CodeCheck``): codes decoded by the wrong model or with one probability off
are refused (with ``salvage``, dropped like a damaged tile), never turned into pixels.

Untrusted files are bounded before anything is allocated from them: an image larger than the
encoder's own limit (``default_max_pixels``) is refused unless the caller raises ``max_pixels``, a
tile whose payload is too short for its codes is refused (a range coder cannot code a code in less
than ``min_bits_per_code`` bits), and so is any image, to compress or to decode, that cannot fit in
the memory actually available (``check_memory``). The VQ-VAE's float arithmetic never depends on
the thread count: the encoder computes every convolution as fixed halves, each on one thread
(``vqvae.split_convolutions``), the decoder runs each of the windows the file's format version
defines on one thread (``reconstruction_windows``), up to one window per core at once in worker
processes (``vqcodec.workers``); so an image always gives the same codes, and a file the same pixels.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vqcodec.coding.bitstream import MAX_PIXELS, Bitstream, Header, pack, unpack
from vqcodec.coding.rdo import CANDIDATES, choose_bottom_codes, weighs_codes
from vqcodec.coding.tile_codec import decode_tiles, encode_tiles, tile_code_checksums
from vqcodec.coding.tiles import check_tile, tile_grid
from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.heap import reuse_freed_memory
from vqcodec.imageio import (
    ImageData,
    from_array,
    from_model_output,
    from_pil,
    read_image,
    read_source,
    to_model_input,
)
from vqcodec.priors.autoregress import one_thread
from vqcodec.resample import check_scale, coded_size, resize
from vqcodec.vqvae import (
    BOTTOM_STRIDE,
    DECODER_REACH,
    band_windows,
    decode_in_windows,
    decode_windows,
    encode_windowed,
    pixels_in_windows,
    split_convolutions,
    window_cores,
)
from vqcodec.vqvae.windows import Window
from vqcodec.workers import fork_workers
from vqcodec.zoo.codec_model import CodecModel, check_device, load_codec_model
from vqcodec.zoo.registry import choose_rung, find_by_fingerprint

WINDOW_ABOVE = 2048 * 2048  # images with more pixels run the VQ-VAE in overlapping windows (bounded memory)
RANGE_CODER_PRECISION = 24  # constriction's default range coder quantizes probabilities to 24 bits

# Peak memory (issue 12, /usr/bin/time -v, shipped model): a fixed part (process, torch, the model:
# 0.29 GB measured), bytes per pixel of the whole image (pixels, the model's float input or output
# and their copies), and the VQ-VAE's activations over what it runs on at once: the whole image up to
# WINDOW_ABOVE pixels, else one window (1152 x 1152; decoding, one per core). Measured peaks: compress
# 2.17 GB for 2048 x 2048 and 2.41 GB for 9000 x 9000; decompress 1.25 GB for 2048 x 2048 and 4.58 GB
# for 9000 x 9000. These constants overestimate them by a fifth to a third, so only what really
# cannot fit is refused. (Format 4's bands hold at most 2**20 pixels plus context, less than a window.)
FIXED_BYTES = 400 << 20
COMPRESS_BYTES_PER_PIXEL = 24
DECOMPRESS_BYTES_PER_PIXEL = 60
VQVAE_BYTES_PER_PIXEL = {False: 520, True: 240}  # by decode
VQVAE_WINDOW_PIXELS = (1024 + 2 * 64) ** 2  # decode_windowed / encode_windowed's window with its margins

ModelSpec = CodecModel | str | os.PathLike | None


def as_image_data(image: Any) -> ImageData:
    """Accept a path, bytes (or a bytearray / memoryview), an open binary file, an ImageData, a PIL
    image or a uint8/uint16 numpy array."""
    if isinstance(image, ImageData):
        return image
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(image, "read"):
        return read_image(image)
    if isinstance(image, Image.Image):
        return from_pil(image)
    if isinstance(image, np.ndarray):
        return from_array(image)
    raise VQCodecError(f"cannot compress an object of type {type(image).__name__}")


def _model(model: ModelSpec, device: str | None, model_dirs: tuple[Path, ...] = ()) -> CodecModel:
    if isinstance(model, CodecModel):
        if device is not None and torch.device(check_device(device)) != torch.device(model.device.type):
            raise VQCodecError(f"the model given is loaded on '{model.device}', not on '{device}'; load it there "
                               "with load_codec_model(..., device=...) or leave device out")
        return model
    return load_codec_model(model, device or "cpu", model_dirs)


# -- limits -------------------------------------------------------------------------------------------------


def default_max_pixels() -> int:
    """The largest image decoded without asking: the encoder's own limit, twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` (where Pillow's decompression-bomb error starts; 178,956,970
    pixels by default), or the format's MAX_PIXELS when Pillow's limit is switched off."""
    limit = Image.MAX_IMAGE_PIXELS
    return min(2 * int(limit), MAX_PIXELS) if limit else MAX_PIXELS


def check_decode_size(head: Header, max_pixels: int | None = None) -> None:
    """Refuse a header that claims more pixels than ``max_pixels`` (default: ``default_max_pixels()``)."""
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise VQCodecError(f"max_pixels must be a positive integer, not {limit!r}")
    width, height = max((head.width, head.height), (head.coded_width, head.coded_height), key=lambda s: s[0] * s[1])
    pixels = width * height
    if pixels > limit:
        raise VQCodecError(
            f"the file claims a {width}x{height} image ({pixels:,} pixels), over the limit of "
            f"{limit:,} pixels (the encoder's); if you trust the file, raise the limit (--max-pixels, "
            "or max_pixels= in Python)"
        )


def available_memory() -> int | None:
    """Bytes of memory this process can still use: MemAvailable from /proc/meminfo, or less where a
    cgroup (v2) limit is tighter; None where neither can be read (not Linux): then nothing is checked."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def memory_needed(pixels: int, decode: bool) -> int:
    """An upper estimate of the peak memory (bytes) of compressing or decoding ``pixels`` pixels."""
    per_pixel = DECOMPRESS_BYTES_PER_PIXEL if decode else COMPRESS_BYTES_PER_PIXEL
    windows = torch.get_num_threads() if decode else 1  # the decoder runs a window per core at once
    at_once = pixels if pixels <= WINDOW_ABOVE else VQVAE_WINDOW_PIXELS * windows  # the whole image, or windows
    return FIXED_BYTES + per_pixel * pixels + VQVAE_BYTES_PER_PIXEL[decode] * at_once


def check_memory(width: int, height: int, decode: bool, pixels: int | None = None, region: bool = False) -> None:
    """Refuse, before the work starts, an image that cannot fit in the memory available, rather than
    be killed by the kernel half-way. ``pixels`` (default: all of them) is what the work touches: the
    larger of the image and its coded size."""
    avail = available_memory()
    need = memory_needed(width * height if pixels is None else pixels, decode)
    if avail is not None and need > avail:
        what = ("decoding a region of" if region else "decoding") if decode else "compressing"
        raise VQCodecError(
            f"{what} a {width}x{height} image needs about {need / 2**30:.1f} GiB of memory, but only "
            f"{avail / 2**30:.1f} GiB is available; free some memory or use a smaller image"
        )


def min_bits_per_code(prior: Any) -> float:
    """A lower bound on what the range coder spends on any one code of ``prior``.

    The integer priors give the most likely code 2**PROB_BITS and every code at least 1 (their
    ``lut.exp_prob`` table), so no code is likelier than max / (max + (K - 1) * min); constriction
    quantizes to 24-bit fixed point (``Categorical(perfect=False)``), which can raise a probability
    by at most two units of 2**-24 and leaves every code at least one unit. With the shipped priors
    (K = 512) a code costs at least 0.000703 bits."""
    k = int(prior.config.num_codes)
    unit = 2.0 ** -RANGE_CODER_PRECISION
    p_max = 1.0
    lut = prior.state().get("lut.exp_prob") if hasattr(prior, "state") else None
    if lut is not None and lut.numel() and float(lut.min()) >= 1:
        hi, lo = float(lut.max()), float(lut.min())
        p_max = hi / (hi + (k - 1) * lo) + 2 * unit
    return -math.log2(min(p_max, 1.0 - (k - 1) * unit))


def short_payloads(m: CodecModel, head: Header, payloads: tuple[bytes, ...] | list[bytes]) -> list[tuple[int, int]]:
    """(tile, minimum bytes) of every tile whose payload is too short to hold its codes.

    A range coder that has coded I bits of information has written more than I / 32 32-bit words
    (it emits a word for every 32 bits, and one more when it is sealed), so a tile of n codes needs
    more than n * min_bits_per_code bits; measured with constriction, a tile of 45,000 of the most
    likely codes (31.6 bits) takes 2 words. A header that claims a huge image over a few bytes of
    payload is refused here, before anything is allocated for it."""
    shapes = m.vqvae.code_shapes(head.coded_height, head.coded_width)
    tiles = tile_grid(shapes[0][0], shapes[0][1], head.tile_size)
    if len(tiles) != len(payloads):
        raise VQCodecError(f"the file holds {len(payloads)} tiles where its geometry needs {len(tiles)}")
    bits = [min_bits_per_code(p) for p in m.priors]
    short = []
    for k, t in enumerate(tiles):
        need = sum((t.height >> lv) * (t.width >> lv) * bits[lv] for lv in range(len(bits)))
        if need > 32 * (len(payloads[k]) // 4):
            short.append((k, 4 * math.ceil(need / 32)))
    return short


# -- compress -------------------------------------------------------------------------------------------------


@torch.no_grad()
@reuse_freed_memory()
def compress(image: Any, model: ModelSpec = None, device: str | None = None, tile: int | None = None,
             quality: int | str | None = None, scale: float | None = None, rdo: float | None = None,
             fast: bool = False) -> bytes:
    """Compress an image (path, bytes, open binary file, PIL image, uint8/uint16 array or ImageData)
    to bytes. ``quality`` picks a rung of the shipped quality ladder: 1 (smallest files) to N (best
    pictures), or a rung's name (``vqcodec models``); ``model`` instead names any codec model, or is
    one, or its file (default, with neither: the default rung); ``scale`` codes the image at that
    fraction of its size (``vqcodec.resample``; a rung sets it, default 1); ``device`` is where to
    load the model ("cpu" or "cuda"; default: cpu, or where the model given is); ``tile`` overrides
    the model's tile size (in bottom-level codes); ``rdo`` weighs each bottom code's bits against its
    distance to the latent (``coding.rdo``; default 0: the nearest codes; 0.02 is tuned); ``fast``
    takes the quality's rung from the fast ladder (multi-pass priors: about a third of the decode time,
    about 5 % more bits on Kodak; ``vqcodec models``)."""
    spec, rung_scale = choose_rung(model, quality, fast)
    lam = check_rdo(rdo) if rdo is not None else 0.0
    if scale is not None and quality is not None:
        raise VQCodecError("give a quality or a scale, not both (a quality sets the scale)")
    scale = check_scale(scale) if scale is not None else rung_scale
    m = _model(spec, device)
    tile = check_tile(tile, m.levels) if tile is not None else m.tile
    img = as_image_data(image)
    h, w, channels = img.pixels.shape
    cw, ch = coded_size(w, h, scale)
    check_memory(w, h, decode=False, pixels=max(w * h, cw * ch))
    codes = image_codes(m, img.pixels, img.bit_depth, (cw, ch), lam, tile)
    header = Header(m.fingerprint, w, h, channels, img.bit_depth, m.levels, tile, img.icc_profile or None,
                    coded_size=(cw, ch) if (cw, ch) != (w, h) else None)
    workers = torch.get_num_threads() if m.device.type == "cpu" else 1
    payloads = tuple(encode_tiles(m.priors, codes, tile, header.symbol_order, workers))
    sums = tile_code_checksums(codes, tile)  # format 5: the decoder checks that it decoded these very codes
    return pack(Bitstream(header, payloads, code_checksums=tuple(sums[k] for k in range(len(payloads)))))


def check_rdo(rdo: Any) -> float:
    """``rdo`` as a weight of bits against distance: a finite number >= 0, else a VQCodecError."""
    if isinstance(rdo, bool) or not isinstance(rdo, int | float) or not math.isfinite(rdo) or rdo < 0:
        raise VQCodecError(f"rdo must be a number >= 0 (0: the nearest codes), not {rdo!r}")
    return float(rdo)


def image_codes(m: CodecModel, pixels: np.ndarray, bit_depth: int, size: tuple[int, int], rdo: float = 0.0,
                tile: int | None = None) -> list[torch.Tensor]:
    """The code maps (bottom first) that ``compress`` makes of pixels (H, W, C), coded at
    ``size`` = (width, height) in tiles of ``tile`` bottom codes (default the model's), the bottom
    codes chosen with weight ``rdo`` on their bits (``coding.rdo``; 0: the nearest codewords)."""
    x = resize(to_model_input(pixels, bit_depth).to(m.device), *size)
    windowed = size[0] * size[1] > WINDOW_ABOVE
    # every convolution split the same way, each part on one thread: the same codes whatever the thread count
    with split_convolutions(torch.get_num_threads()), one_thread():
        if not weighs_codes(m, rdo):
            return encode_windowed(m.vqvae, x) if windowed else m.vqvae.encode(x)
        if windowed:
            found = encode_windowed(m.vqvae, x, candidates=CANDIDATES)
        else:
            found = m.vqvae.encode_candidates(x, CANDIDATES)
    codes, candidates, distances = found
    return choose_bottom_codes(m.priors, codes, candidates, distances, rdo, tile or m.tile)


# -- decompress -----------------------------------------------------------------------------------------------


def vqc_bytes(data: Any) -> bytes:
    """The bytes of a `.vqc` file given as bytes, a bytearray or memoryview, a path or an open
    binary file."""
    if isinstance(data, (bytes, bytearray, memoryview, str, os.PathLike)) or hasattr(data, "read"):
        return read_source(data, "a .vqc file")[0]
    raise VQCodecError(
        f"decompress takes the bytes of a .vqc file, its path or an open binary file, not {type(data).__name__}"
    )


def check_region(region: Any) -> tuple[int, int, int, int]:
    """``region`` as four integers (x, y, width, height), or a VQCodecError."""
    try:
        x, y, w, h = region
    except (TypeError, ValueError):
        raise VQCodecError(f"region must be (x, y, width, height) in pixels, got {region!r}") from None
    values = (x, y, w, h)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise VQCodecError(f"region must be four integers (x, y, width, height), got {region!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def model_for(head: Header, model: ModelSpec, device: str | None, model_dirs: tuple[Path, ...] = ()) -> CodecModel:
    """The model that wrote a file: the one given (checked against the file), or the installed one
    whose fingerprint the file records."""
    if model is None:
        path = find_by_fingerprint(head.model_fingerprint, model_dirs)
        if path is None:
            raise VQCodecError(
                f"this file was written by model {head.model_fingerprint.hex()}, which is not installed; "
                "pass its file with --model, or put it in a folder named by $VQCODEC_MODELS or --model-dir"
            )
        model = path
    m = _model(model, device, model_dirs)
    if head.model_fingerprint != m.fingerprint:
        raise VQCodecError(
            f"this file was written by model {head.model_fingerprint.hex()}, but the loaded model "
            f"'{m.name}' is {m.fingerprint.hex()}; pass the right one with --model (or none, to find it)"
        )
    if head.levels != m.levels:
        raise VQCodecError(f"the file has {head.levels} code levels but the model has {m.levels}")
    return m


def reconstruction_windows(m: CodecModel, head: Header) -> list[Window]:
    """The windows the VQ-VAE decodes a file's coded image in, as its format version defines them:
    version 4 the bands of ``vqvae.band_windows``; earlier versions the whole image, or 1024-pixel
    squares above WINDOW_ABOVE pixels. The pixels depend on them (oneDNN sums in an order it picks
    from each convolution's shape), so a file decodes the same way whatever decodes it."""
    shapes = m.vqvae.code_shapes(head.coded_height, head.coded_width)
    ph, pw = shapes[0][0] * BOTTOM_STRIDE, shapes[0][1] * BOTTOM_STRIDE
    if head.banded:
        return band_windows(ph, pw, m.vqvae.config.stride)
    if head.coded_width * head.coded_height > WINDOW_ABOVE:
        return decode_windows(m.vqvae, ph, pw)
    return [(0, ph, 0, ph, 0, pw, 0, pw)]


def _decode_region(m: CodecModel, head: Header, payloads: list[bytes], region: tuple[int, int, int, int],
                   skip: frozenset[int], check: CodeCheck) -> torch.Tensor:
    """Pixels (1, C, h, w) of region (x, y, w, h), bit for bit those of the full decode: only the
    tiles under it (plus the decoder's reach) are decoded, except those in ``skip`` (damaged), and
    the VQ-VAE decodes each window of the full decode that the region touches
    (``reconstruction_windows``), in one piece as the full decode does. A strip across the region
    would be cheaper but is not exact: oneDNN picks its blocking, and so its order of summation,
    from a convolution's shape (a strip of 61 rows of top codes where the image has 105 gave other
    bits), which moved pixels of regions of 512x455 and 838x552 images by one level."""
    x, y, w, h = region
    s, b = m.vqvae.config.stride, BOTTOM_STRIDE
    shapes = m.vqvae.code_shapes(head.height, head.width)
    jobs = []  # (window, region rows, region columns)
    needed = set()  # the tiles under the region and the decoder's reach around it
    tiles = tile_grid(shapes[0][0], shapes[0][1], head.tile_size)
    for window in reconstruction_windows(m, head):
        ys, ye, ylo, yhi, xs, xe, xlo, xhi = window
        cy0, cy1, cx0, cx1 = max(y, ys), min(y + h, ye), max(x, xs), min(x + w, xe)
        if cy0 >= cy1 or cx0 >= cx1:
            continue
        py0, py1 = max(ylo, (cy0 - DECODER_REACH) // s * s), min(yhi, -(-(cy1 + DECODER_REACH) // s) * s)
        px0, px1 = max(xlo, (cx0 - DECODER_REACH) // s * s), min(xhi, -(-(cx1 + DECODER_REACH) // s) * s)
        jobs.append((window, (cy0, cy1), (cx0, cx1)))
        needed |= {k for k, t in enumerate(tiles) if t.row < py1 // b and t.row + t.height > py0 // b
                   and t.col < px1 // b and t.col + t.width > px0 // b}
    maps = decode_tiles(m.priors, shapes, payloads, head.tile_size, only=needed - skip, order=head.symbol_order)
    check(maps, needed - skip)
    out = torch.zeros((1, m.vqvae.config.in_channels, h, w), device=maps[0].device)
    with one_thread():  # each window whole: the full decode's shapes
        cores = window_cores(m.vqvae, maps, [window for window, _, _ in jobs], fork_workers(maps[0].device))
        for (window, (cy0, cy1), (cx0, cx1)), core in zip(jobs, cores):
            ys, _, _, _, xs, _, _, _ = window
            part = torch.from_numpy(core[:, :, cy0 - ys : cy1 - ys, cx0 - xs : cx1 - xs])
            out[:, :, cy0 - y : cy1 - y, cx0 - x : cx1 - x] = part.to(out.device)
    return out


@torch.no_grad()
@reuse_freed_memory()
def decompress_image(
    data: Any,
    model: ModelSpec = None,
    device: str | None = None,
    region: tuple[int, int, int, int] | None = None,
    salvage: bool = False,
    model_dirs: tuple[Path, ...] = (),
    max_pixels: int | None = None,
) -> ImageData:
    """Decode a vqcodec file (bytes, a path or an open binary file) to pixels with the file's bit
    depth, channels and ICC profile. Without ``model`` the installed model whose fingerprint the
    file records is used. ``region`` = (x, y, width, height) decodes only that part, touching only
    the tiles under it; its pixels are exactly those of the full image. A file that claims more
    than ``max_pixels`` pixels (default: ``default_max_pixels()``, the encoder's limit) is refused
    before anything is allocated.

    A tile payload that fails its checksum (or is too short for its codes, or is cut off at the
    end of a truncated file), or (format version 5) whose decoded codes fail their checksum, is a
    VQCodecError, unless ``salvage``: then the damaged tiles are not decoded, or their codes are
    dropped (their codes stay 0, so their area shows no image content), every other tile decodes
    exactly as from the intact file, and the result's ``damaged_tiles`` lists them; a file with no
    intact tile is an error either way."""
    box = check_region(region) if region is not None else None
    stream = unpack(vqc_bytes(data), salvage=salvage)
    head = stream.header
    if box is not None:
        x, y, w, h = box
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > head.width or y + h > head.height:
            raise VQCodecError(f"region {box} is not inside the {head.width}x{head.height} image")
    check_decode_size(head, max_pixels)
    m = model_for(head, model, device, model_dirs)
    payloads = list(stream.tiles)
    damaged = set(stream.damaged)
    short = [(k, n) for k, n in short_payloads(m, head, payloads) if k not in damaged]
    if short and not salvage:
        k, n = short[0]
        more = f" (and {len(short) - 1} more tiles)" if len(short) > 1 else ""
        raise VQCodecError(f"payload of tile {k} is {len(payloads[k])} bytes, too short for its codes (at least "
                           f"{n} bytes){more}; the file is corrupted")
    damaged |= {k for k, _ in short}
    if damaged and len(damaged) == len(payloads):
        raise VQCodecError(f"nothing can be restored: all {len(payloads)} tiles are damaged")
    check = CodeCheck(m, head, stream.code_checksums, salvage, damaged)

    def to_pixels(recon: torch.Tensor) -> np.ndarray:
        return from_model_output(recon.cpu(), head.channels, head.bit_depth)

    if box is not None and head.coded_size is None:
        # the VQ-VAE runs on the windows of a full decode (``_decode_region``), so it needs what one does
        check_memory(head.width, head.height, decode=True, region=True)
        pixels = to_pixels(_decode_region(m, head, payloads, box, frozenset(damaged), check))
    else:
        check_memory(head.width, head.height, decode=True,
                     pixels=max(head.width * head.height, head.coded_width * head.coded_height))
        pixels = _decode_whole(m, head, payloads, damaged, check, to_pixels)
        if box is not None:  # a resampled file: every pixel depends on the whole coded image's resize
            x, y, w, h = box
            pixels = np.ascontiguousarray(pixels[y : y + h, x : x + w])
    damaged_tiles = tuple(sorted(damaged | check.failed))
    return ImageData(pixels, head.bit_depth, head.icc_profile, damaged_tiles)


def _decode_whole(m: CodecModel, head: Header, payloads: list[bytes], damaged: set[int],
                  check: CodeCheck, to_pixels: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
    """Pixels (H, W, C) of the whole image: the codes decoded at the coded size, the VQ-VAE's
    reconstruction resized to the image's size when the file was coded at another one; at its own
    size each band goes to pixels as it comes (``pixels_in_windows``: bounded memory)."""
    cw, ch = head.coded_width, head.coded_height
    shapes = m.vqvae.code_shapes(ch, cw)
    only = set(range(len(payloads))) - damaged if damaged else None
    maps = decode_tiles(m.priors, shapes, payloads, head.tile_size, only=only, order=head.symbol_order)
    check(maps, set(range(len(payloads))) - damaged)
    workers = fork_workers(maps[0].device)
    windows = reconstruction_windows(m, head)
    with one_thread():  # each window on one thread: the same pixels whatever the thread count, and a region's
        if (cw, ch) == (head.width, head.height):
            return pixels_in_windows(m.vqvae, maps, windows, ch, cw, to_pixels, workers)
        recon = decode_in_windows(m.vqvae, maps, windows, ch, cw, workers)
        return to_pixels(m.vqvae.resize_back(recon, head.width, head.height, workers))


def decompress(
    data: Any,
    model: ModelSpec = None,
    device: str | None = None,
    region: tuple[int, int, int, int] | None = None,
    salvage: bool = False,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode a vqcodec file (bytes, a path or an open binary file) to a (H, W) or (H, W, 3)
    uint8/uint16 array (or one region of it). With ``salvage``, damaged tiles are skipped as in
    decompress_image; since an array cannot say which, a VQCodecWarning names them."""
    image = decompress_image(data, model, device, region, salvage=salvage, max_pixels=max_pixels)
    if image.damaged_tiles:
        warnings.warn(VQCodecWarning(damage_message(image.damaged_tiles)), stacklevel=2)
    pix = image.pixels
    return pix[..., 0] if pix.shape[2] == 1 else pix


class CodeCheck:
    """Checks the code maps a decoder made against the file's checksum of each tile's codes (format
    version 5; earlier versions have none, and pass): a model other than the writer's, or one
    probability that differs by one unit, decodes to other codes, which fail their checksum. A failure
    is a VQCodecError; with ``salvage`` those tiles are dropped like damaged ones instead (their codes
    set to 0) and listed in ``failed``."""

    def __init__(self, m: CodecModel, head: Header, sums: tuple[int, ...] | None, salvage: bool,
                 damaged: set[int]) -> None:
        self.model, self.head, self.sums, self.salvage, self.damaged = m, head, sums, salvage, damaged
        self.failed: set[int] = set()

    def __call__(self, maps: list[torch.Tensor], decoded: set[int]) -> None:
        """Check tiles ``decoded`` of ``maps`` (bottom first, each (1, H_l, W_l)), in place."""
        if self.sums is None or not decoded:
            return
        got = tile_code_checksums(maps, self.head.tile_size, decoded)
        failed = sorted(k for k in decoded if got[k] != self.sums[k])
        if not failed:
            return
        count = len(self.sums)
        if not self.salvage or len(self.damaged | self.failed | set(failed)) == count:
            raise VQCodecError(code_failure_message(failed, count, self.model.name, self.salvage))
        tiles = tile_grid(maps[0].shape[1], maps[0].shape[2], self.head.tile_size)
        for k in failed:
            for lv, level in enumerate(maps):
                level[0][tiles[k].window(lv)] = 0
        self.failed.update(failed)


def code_failure_message(failed: list[int], count: int, model: str, salvage: bool = False) -> str:
    """One line for tiles whose decoded codes fail their checksum (of ``count`` tiles in the file)."""
    if len(failed) == 1:
        which, checksum = f"tile {failed[0]}", "checksum"
    else:
        listed = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        which = f"all {count} tiles" if len(failed) == count else f"{len(failed)} tiles ({listed})"
        checksum = "checksums"
    first = "nothing can be restored: " if salvage else ""
    return (f"{first}{which} decoded to codes that fail their {checksum}: the file was not written by the priors "
            f"of model '{model}', or it is damaged")


def damage_message(damaged: tuple[int, ...]) -> str:
    """One line naming the tiles a salvage decode had to skip."""
    return f"{len(damaged)} damaged tile(s) ({', '.join(map(str, damaged))}) could not be restored"
