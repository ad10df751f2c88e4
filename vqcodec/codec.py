"""compress / decompress: image -> VQ-VAE codes -> integer prior -> range coder -> bitstream.

Code maps are cut into tiles (``tile`` bottom codes square, the matching windows of the levels
above). A tile's prior context never leaves the tile and each tile is its own range-coder stream,
so tiles of one shape are decoded as one batch, a region can be decoded alone (only the tiles
under it), and a damaged tile does not take the others with it: the container checksums each
tile's payload, a damaged one is refused by default, and with ``salvage=True`` it is left undecoded
(its codes stay 0) while every other tile decodes exactly as from the intact file. Within a tile the
top level is coded first, then each lower level conditioned on the levels above.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .bitstream import Bitstream, Header, pack, unpack
from .bundle import CodecModel, load_codec_model
from .entropy import TileDecoders, encode_symbols
from .errors import VQCodecError, VQCodecWarning
from .imageio import ImageData, from_array, from_pil, from_tensor, read_image, to_tensor
from .intprior import Stepper, one_thread
from .vqvae import decode_windowed, encode_windowed

WINDOW_ABOVE = 2048 * 2048  # images with more pixels run the VQ-VAE in overlapping windows (bounded memory)


@dataclass(frozen=True)
class Tile:
    """A window of the bottom code map; level l uses the same window scaled by 2**-l."""

    row: int
    col: int
    height: int
    width: int

    def window(self, level: int) -> tuple[slice, slice]:
        r, c, h, w = self.row >> level, self.col >> level, self.height >> level, self.width >> level
        return slice(r, r + h), slice(c, c + w)


def tile_grid(height: int, width: int, tile: int) -> list[Tile]:
    """Tiles in raster order covering a bottom code map of ``height`` x ``width``."""
    return [
        Tile(r, c, min(tile, height - r), min(tile, width - c))
        for r in range(0, height, tile)
        for c in range(0, width, tile)
    ]


def _groups(tiles: list[Tile]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, t in enumerate(tiles):
        groups[(t.height, t.width)].append(i)
    return groups


def as_image_data(image: Any) -> ImageData:
    """Accept a path, bytes, an ImageData, a PIL image or a uint8/uint16 numpy array."""
    if isinstance(image, ImageData):
        return image
    if isinstance(image, (str, os.PathLike, bytes)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return from_pil(image)
    if isinstance(image, np.ndarray):
        return from_array(image)
    raise VQCodecError(f"cannot compress an object of type {type(image).__name__}")


def _model(model: CodecModel | str | os.PathLike | None, device: str) -> CodecModel:
    return model if isinstance(model, CodecModel) else load_codec_model(model, device)


@torch.no_grad()
def encode_codes(m: CodecModel, codes: list[torch.Tensor]) -> list[bytes]:
    """Tile payloads for code maps (bottom first, each (1, H_l, W_l))."""
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], m.tile)
    parts: list[list] = [[] for _ in tiles]
    for idx in _groups(tiles).values():
        for level in reversed(range(m.levels)):
            batch = [torch.stack([codes[lv][0][tiles[k].window(lv)] for k in idx]) for lv in range(level, m.levels)]
            probs = m.priors[level].parallel_probs(batch[0], batch[1:] or None)
            for j, k in enumerate(idx):
                parts[k].append((batch[0][j].reshape(-1).cpu().numpy(), probs[j].reshape(-1, probs.shape[-1])))
    return [encode_symbols(p) for p in parts]


@torch.no_grad()
def decode_codes(
    m: CodecModel, shapes: list[tuple[int, int]], payloads: list[bytes], only: set[int] | None = None
) -> list[torch.Tensor]:
    """Code maps from tile payloads: one code at a time per tile, all tiles of a shape together.
    With ``only``, just those tiles are decoded (the rest of the maps stay 0)."""
    tiles = tile_grid(shapes[0][0], shapes[0][1], m.tile)
    if len(tiles) != len(payloads):
        raise VQCodecError(f"the file holds {len(payloads)} tiles where its geometry needs {len(tiles)}")
    maps = [torch.zeros((1, *s), dtype=torch.long, device=m.device) for s in shapes]
    with one_thread():
        _decode_groups(m, tiles, payloads, maps, only)
    return maps


def _decode_groups(
    m: CodecModel, tiles: list[Tile], payloads: list[bytes], maps: list[torch.Tensor], only: set[int] | None
) -> None:
    for idx in _groups(tiles).values():
        idx = [k for k in idx if only is None or k in only]
        if not idx:
            continue
        decoders = TileDecoders([payloads[k] for k in idx])
        for level in reversed(range(m.levels)):
            cond = [torch.stack([maps[lv][0][tiles[k].window(lv)] for k in idx]) for lv in range(level + 1, m.levels)]
            h, w = tiles[idx[0]].height >> level, tiles[idx[0]].width >> level
            out = torch.zeros((len(idx), h, w), dtype=torch.long, device=m.device)
            stepper = Stepper(m.priors[level], len(idx), h, w, cond or None)
            for r in range(h):
                stepper.row(r)
                for c in range(w):
                    symbols = decoders.decode(stepper.probs_at(r, c)).to(m.device)
                    stepper.put(r, c, symbols)
                    out[:, r, c] = symbols
            for j, k in enumerate(idx):
                maps[level][0][tiles[k].window(level)] = out[j]


def with_tile(m: CodecModel, tile: int | None) -> CodecModel:
    """The model coding with another tile size (bigger: fewer bits, slower decoding; the default was
    chosen by measurement, see benchmarks/README.md)."""
    if tile is None or tile == m.tile:
        return m
    unit = 1 << (m.levels - 1)
    if tile < 4 or tile > 256 or tile & (tile - 1) or tile % unit:
        raise VQCodecError(f"tile must be a power of two from {max(4, unit)} to 256, not {tile}")
    return dataclasses.replace(m, tile=tile)


@torch.no_grad()
def compress(
    image: Any, model: CodecModel | str | None = None, device: str = "cpu", tile: int | None = None
) -> bytes:
    """Compress an image (path, bytes, PIL image, uint8/uint16 array or ImageData) to bytes.
    ``tile`` overrides the model's tile size (in bottom-level codes)."""
    m = with_tile(_model(model, device), tile)
    img = as_image_data(image)
    h, w, channels = img.pixels.shape
    x = to_tensor(img.pixels, img.bit_depth).to(m.device)
    if channels == 1:
        x = x.repeat(1, 3, 1, 1)
    codes = encode_windowed(m.vqvae, x) if h * w > WINDOW_ABOVE else m.vqvae.encode(x)
    header = Header(m.fingerprint, w, h, channels, img.bit_depth, m.levels, m.tile, img.icc_profile or None)
    return pack(Bitstream(header, tuple(encode_codes(m, codes))))


REGION_MARGIN = 64  # pixels of decoded context around a region: the VQ-VAE decoder's reach


def _decode_region(m: CodecModel, shapes, payloads: list[bytes], region: tuple[int, int, int, int], head: Header,
                   skip: frozenset[int] = frozenset()):
    """Pixels (1, C, h, w) of region (x, y, w, h): only the tiles under it (plus a margin) are decoded,
    except those in ``skip`` (damaged)."""
    x, y, w, h = region
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > head.width or y + h > head.height:
        raise VQCodecError(f"region {region} is not inside the {head.width}x{head.height} image")
    s = m.vqvae.config.stride
    ph, pw = shapes[0][0] * 4, shapes[0][1] * 4
    wy0, wx0 = max(0, (y - REGION_MARGIN) // s * s), max(0, (x - REGION_MARGIN) // s * s)
    wy1, wx1 = min(ph, -(-(y + h + REGION_MARGIN) // s) * s), min(pw, -(-(x + w + REGION_MARGIN) // s) * s)
    tiles = tile_grid(shapes[0][0], shapes[0][1], m.tile)
    needed = {
        k for k, t in enumerate(tiles)
        if t.row < wy1 // 4 and t.row + t.height > wy0 // 4 and t.col < wx1 // 4 and t.col + t.width > wx0 // 4
    }
    maps = decode_codes(m, shapes, payloads, only=needed - skip)
    part = [c[:, wy0 // (4 << lv) : wy1 // (4 << lv), wx0 // (4 << lv) : wx1 // (4 << lv)] for lv, c in enumerate(maps)]
    recon = m.vqvae.decode(part, wy1 - wy0, wx1 - wx0)
    return recon[:, :, y - wy0 : y - wy0 + h, x - wx0 : x - wx0 + w]


@torch.no_grad()
def decompress_image(
    data: bytes,
    model: CodecModel | str | None = None,
    device: str = "cpu",
    region: tuple[int, int, int, int] | None = None,
    salvage: bool = False,
) -> ImageData:
    """Decode a vqcodec bitstream to pixels with the file's bit depth, channels and ICC profile.
    ``region`` = (x, y, width, height) decodes only that part, touching only the tiles under it.
    A tile payload that fails its checksum is a VQCodecError, unless ``salvage``: then the damaged
    tiles are not decoded (their codes stay 0, so their area shows no image content), every other
    tile decodes exactly as from the intact file, and the result's ``damaged_tiles`` lists them."""
    stream = unpack(bytes(data), salvage=salvage)
    head = stream.header
    m = _model(model, device)
    if head.model_fingerprint != m.fingerprint:
        raise VQCodecError(
            f"this file was written by model {head.model_fingerprint.hex()}, but the loaded model "
            f"'{m.name}' is {m.fingerprint.hex()}; pass the right one with --model"
        )
    if head.levels != m.levels:
        raise VQCodecError(f"the file has {head.levels} code levels but the model has {m.levels}")
    m = with_tile(m, head.tile_size)
    shapes = m.vqvae.code_shapes(head.height, head.width)
    payloads = list(stream.tiles)
    only = set(range(len(payloads))) - set(stream.damaged) if stream.damaged else None
    if region is not None:
        recon = _decode_region(m, shapes, payloads, region, head, frozenset(stream.damaged)).clamp(0, 1)
    elif head.height * head.width > WINDOW_ABOVE:
        recon = decode_windowed(m.vqvae, decode_codes(m, shapes, payloads, only=only), head.height, head.width)
    else:
        recon = m.vqvae.decode(decode_codes(m, shapes, payloads, only=only), head.height, head.width)
    recon = recon.clamp(0, 1)
    if head.channels == 1:
        recon = recon.mean(1, keepdim=True)
    return ImageData(from_tensor(recon.cpu(), head.bit_depth), head.bit_depth, head.icc_profile, stream.damaged)


def decompress(
    data: bytes,
    model: CodecModel | str | None = None,
    device: str = "cpu",
    region: tuple[int, int, int, int] | None = None,
    salvage: bool = False,
) -> np.ndarray:
    """Decode a vqcodec bitstream to a (H, W) or (H, W, 3) uint8/uint16 array (or one region of it).
    With ``salvage``, damaged tiles are skipped as in decompress_image; since an array cannot say
    which, a VQCodecWarning names them."""
    image = decompress_image(data, model, device, region, salvage=salvage)
    if image.damaged_tiles:
        warnings.warn(VQCodecWarning(damage_message(image.damaged_tiles)), stacklevel=2)
    pix = image.pixels
    return pix[..., 0] if pix.shape[2] == 1 else pix


def damage_message(damaged: tuple[int, ...]) -> str:
    """One line naming the tiles a salvage decode had to skip."""
    return f"{len(damaged)} damaged tile(s) ({', '.join(map(str, damaged))}) could not be restored"
