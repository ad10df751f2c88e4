"""Running the VQ-VAE on windows of an image: bounded memory, several cores, and the band geometry
that format version 4 defines.

A window is (core y0, y1, window y0, y1, core x0, x1, window x0, x1) in pixels of the padded image,
all multiples of the model's stride: the model runs on the window, and only its core is kept. The
decoder's pixels at a position depend only on codes within DECODER_REACH of it, so a core far
enough from the window's cut edges gets the same values as a decode of the whole image, up to the
float summation order, which oneDNN picks from a convolution's shape. So a file's pixels depend on
the windows it is decoded in: formats 1 to 3 decode the whole image at once (in 1024-pixel windows
above ``codec.WINDOW_ABOVE`` pixels), format 4 in the bands of ``band_windows``. The codec computes
each window on one thread, so the same windows give the same pixels whether they run one after
another (under ``one_thread()``) or side by side in worker processes (``decode_in_windows``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import torch

from vqcodec.vqvae.model import BOTTOM_STRIDE, VQVAE
from vqcodec.workers import map_forked

DECODER_REACH = 64  # pixels of context the decoder needs around a window (windowed and region decoding)
BAND_MAX_WIDTH = 2048  # format 4: wider images are cut into columns too
BAND_MAX_PIXELS = 1 << 20  # format 4: the most core pixels in one band (bounded memory at any size)
BAND_MIN_HEIGHT = 4 * DECODER_REACH  # format 4: lower images are one band (a cut would cost more than it saves)

Window = tuple[int, int, int, int, int, int, int, int]


def _spans(length: int, window: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) covering [0, length) in steps of ``window``."""
    spans = []
    for start in range(0, length, window):
        end = min(length, start + window)
        lo = max(0, start - margin)
        hi = min(length, end + margin)
        spans.append((start, end, lo, hi))
    return spans


def _grid(height: int, width: int, window_h: int, window_w: int, margin: int) -> list[Window]:
    return [(ys, ye, ylo, yhi, xs, xe, xlo, xhi)
            for ys, ye, ylo, yhi in _spans(height, window_h, margin)
            for xs, xe, xlo, xhi in _spans(width, window_w, margin)]


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def decode_windows(
    model: VQVAE, height: int, width: int, window: int = 1024, margin: int = DECODER_REACH
) -> list[Window]:
    """The windows ``decode_windowed`` decodes for a padded image of ``height`` x ``width`` pixels
    (formats 1 to 3 above WINDOW_ABOVE pixels): squares of ``window`` pixels."""
    s = model.config.stride
    return _grid(height, width, _round_up(window, s), _round_up(window, s), _round_up(margin, s))


def band_windows(height: int, width: int, stride: int) -> list[Window]:
    """The windows format 4 decodes a padded image of ``height`` x ``width`` pixels in
    (``stride``: the model's top-level stride; docs/bitstream.md has the rule).

    Full-width bands (columns only past BAND_MAX_WIDTH pixels), an even number of them, so two
    cores share the work evenly, and as few as keep each core under BAND_MAX_PIXELS pixels (give or
    take the rounding of its height to the stride), each with DECODER_REACH pixels of context on
    every side where the image goes on. An image under BAND_MIN_HEIGHT pixels high has one row of
    bands. A 768x512 image is two bands of 256 rows, 1344x896 two of 448."""
    columns = -(-width // BAND_MAX_WIDTH)
    band_w = _round_up(-(-width // columns), stride)
    rows = 1 if height < BAND_MIN_HEIGHT else 2 * -(-height * band_w // (2 * BAND_MAX_PIXELS))
    band_h = _round_up(-(-height // rows), stride)
    return _grid(height, width, band_h, band_w, _round_up(DECODER_REACH, stride))


def crop_codes(model: VQVAE, codes: list[torch.Tensor], y0: int, y1: int, x0: int, x1: int) -> list[torch.Tensor]:
    """The codes of every level under the pixel window [y0, y1) x [x0, x1) (multiples of the stride)."""
    f = model.config.level_stride
    return [c[:, y0 // f(lvl) : y1 // f(lvl), x0 // f(lvl) : x1 // f(lvl)] for lvl, c in enumerate(codes)]


def decode_window(model: VQVAE, codes: list[torch.Tensor], window: Window) -> torch.Tensor:
    """The decoder's output (B, C, core height, core width), unclamped, for the core of ``window``:
    the model run on the whole window, as a full decode in those windows runs it."""
    ys, ye, ylo, yhi, xs, xe, xlo, xhi = window
    img = model.decode(crop_codes(model, codes, ylo, yhi, xlo, xhi), yhi - ylo, xhi - xlo)
    return img[:, :, ys - ylo : ye - ylo, xs - xlo : xe - xlo]


def _window_core(model: VQVAE, codes: list[torch.Tensor], window: Window) -> np.ndarray:
    """``decode_window`` as a numpy array: what a worker process sends back (``vqcodec.workers``)."""
    with torch.no_grad():
        return decode_window(model, codes, window).cpu().numpy()


def window_cores(
    model: VQVAE, codes: list[torch.Tensor], windows: list[Window], workers: int = 1,
) -> Iterator[np.ndarray]:
    """``decode_window`` of every window, in order, as numpy arrays: up to ``workers`` windows at
    once in forked processes of one thread each (``vqcodec.workers.map_forked``), else one after
    another here (under ``one_thread()`` each also computes on one thread, so the pixels do not
    depend on ``workers``)."""
    return map_forked(functools.partial(_window_core, model, codes), windows, workers)


@torch.no_grad()
def decode_in_windows(
    model: VQVAE, codes: list[torch.Tensor], windows: list[Window], height: int, width: int, workers: int = 1,
) -> torch.Tensor:
    """``model.decode`` of the image the code maps describe, window by window (their cores tile the
    padded image; ``window_cores``), cropped to ``height`` x ``width`` (measured: two bands of a
    Kodak image at quality 8 in 1.6-2.0 s on 2 cores, the whole image 3.3-3.6 s on one)."""
    hp, wp = codes[0].shape[1] * BOTTOM_STRIDE, codes[0].shape[2] * BOTTOM_STRIDE
    out = torch.zeros((codes[0].shape[0], model.config.in_channels, hp, wp), device=codes[0].device)
    for (ys, ye, _, _, xs, xe, _, _), core in zip(windows, window_cores(model, codes, windows, workers)):
        out[:, :, ys:ye, xs:xe] = torch.from_numpy(core).to(out.device)
    return out[:, :, :height, :width]


@torch.no_grad()
def pixels_in_windows(
    model: VQVAE, codes: list[torch.Tensor], windows: list[Window], height: int, width: int,
    to_pixels: Callable[[torch.Tensor], np.ndarray], workers: int = 1,
) -> np.ndarray:
    """``to_pixels`` of ``decode_in_windows``'s image, made core by core: ``to_pixels`` turns each
    pixel on its own (clamp, round), so the pixels are the same, and the float image (four bytes a
    sample: 288 MB at 24 megapixels) is never held whole."""
    out: np.ndarray | None = None
    for (ys, _, _, _, xs, _, _, _), core in zip(windows, window_cores(model, codes, windows, workers)):
        if ys >= height or xs >= width:
            continue
        part = to_pixels(torch.from_numpy(core)[:, :, : height - ys, : width - xs])
        if out is None:
            out = np.empty((height, width, part.shape[2]), dtype=part.dtype)
        out[ys : ys + part.shape[0], xs : xs + part.shape[1]] = part
    assert out is not None, "windows cover the image"
    return out


@torch.no_grad()
def decode_windowed(
    model: VQVAE, codes: list[torch.Tensor], height: int, width: int, window: int = 1024,
    margin: int = DECODER_REACH, workers: int = 1,
) -> torch.Tensor:
    """``model.decode`` in overlapping square windows (pixels), keeping each window's core: bounded memory."""
    hp, wp = codes[0].shape[1] * BOTTOM_STRIDE, codes[0].shape[2] * BOTTOM_STRIDE
    return decode_in_windows(model, codes, decode_windows(model, hp, wp, window, margin), height, width, workers)


@torch.no_grad()
def encode_windowed(
    model: VQVAE, x: torch.Tensor, window: int = 1024, margin: int = DECODER_REACH, candidates: int = 0,
) -> list[torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``model.encode`` in overlapping windows of ``window`` pixels, so memory stays bounded for very
    large images. Each window is encoded with ``margin`` pixels of context on every side and only its
    core's codes are kept; codes far from window edges equal those of a whole-image encode. With
    ``candidates`` = k, ``model.encode_candidates``'s bottom candidates and distances come too."""
    x = model.pad(x)
    h, w = x.shape[2:]
    shapes = model.code_shapes(h, w)
    codes = [torch.zeros((x.shape[0], hh, ww), dtype=torch.long, device=x.device) for hh, ww in shapes]
    cand = [torch.zeros((x.shape[0], *shapes[0], candidates), dtype=dt, device=x.device)
            for dt in (torch.long, torch.float32)] if candidates else []
    for ys, ye, ylo, yhi, xs, xe, xlo, xhi in decode_windows(model, h, w, window, margin):
        window_x = x[:, :, ylo:yhi, xlo:xhi]
        if candidates:
            part, *extra = model.encode_candidates(window_x, candidates)
        else:
            part, extra = model.encode(window_x), []
        for lvl, c in enumerate(part):
            f = model.config.level_stride(lvl)
            core = (slice(None), slice((ys - ylo) // f, (ye - ylo) // f), slice((xs - xlo) // f, (xe - xlo) // f))
            codes[lvl][:, ys // f : ye // f, xs // f : xe // f] = c[core]
            if lvl == 0:
                for out, e in zip(cand, extra):
                    out[:, ys // f : ye // f, xs // f : xe // f] = e[core]
    return (codes, *cand) if candidates else codes
