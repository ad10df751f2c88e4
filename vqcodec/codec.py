"""compress / decompress: image -> VQ-VAE codes -> integer priors -> range coder -> `.vqc` bytes.

The stages live in their rooms (``vqvae``, ``priors``, ``coding``, ``zoo``); this module is the
public entry point that strings them together. Code maps are coded in tiles (``coding.tiles``): a
region decodes only the tiles under it, and a damaged tile does not take the others with it: the
container checksums each tile's payload, a damaged one is refused by default, and with
``salvage=True`` it is left undecoded (its codes stay 0) while every other tile decodes exactly as
from the intact file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vqcodec.coding.bitstream import Bitstream, Header, pack, unpack
from vqcodec.coding.tile_codec import decode_tiles, encode_tiles
from vqcodec.coding.tiles import check_tile, tile_grid
from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.imageio import ImageData, from_array, from_model_output, from_pil, read_image, to_model_input
from vqcodec.vqvae import DECODER_REACH, crop_codes, decode_windowed, encode_windowed
from vqcodec.zoo.codec_model import CodecModel, load_codec_model
from vqcodec.zoo.registry import find_by_fingerprint

WINDOW_ABOVE = 2048 * 2048  # images with more pixels run the VQ-VAE in overlapping windows (bounded memory)

ModelSpec = CodecModel | str | os.PathLike | None


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


def _model(model: ModelSpec, device: str, model_dirs: tuple[Path, ...] = ()) -> CodecModel:
    return model if isinstance(model, CodecModel) else load_codec_model(model, device, model_dirs)


@torch.no_grad()
def compress(image: Any, model: ModelSpec = None, device: str = "cpu", tile: int | None = None) -> bytes:
    """Compress an image (path, bytes, PIL image, uint8/uint16 array or ImageData) to bytes.
    ``model`` is a codec model, its name or its file (default: the default model); ``tile``
    overrides the model's tile size (in bottom-level codes)."""
    m = _model(model, device)
    tile = check_tile(tile, m.levels) if tile is not None else m.tile
    img = as_image_data(image)
    h, w, channels = img.pixels.shape
    x = to_model_input(img.pixels, img.bit_depth).to(m.device)
    codes = encode_windowed(m.vqvae, x) if h * w > WINDOW_ABOVE else m.vqvae.encode(x)
    header = Header(m.fingerprint, w, h, channels, img.bit_depth, m.levels, tile, img.icc_profile or None)
    return pack(Bitstream(header, tuple(encode_tiles(m.priors, codes, tile, header.symbol_order))))


def model_for(head: Header, model: ModelSpec, device: str, model_dirs: tuple[Path, ...] = ()) -> CodecModel:
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


def _decode_region(m: CodecModel, head: Header, payloads: list[bytes], region: tuple[int, int, int, int],
                   skip: frozenset[int]) -> torch.Tensor:
    """Pixels (1, C, h, w) of region (x, y, w, h): only the tiles under it (plus the decoder's
    reach) are decoded, except those in ``skip`` (damaged)."""
    x, y, w, h = region
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > head.width or y + h > head.height:
        raise VQCodecError(f"region {region} is not inside the {head.width}x{head.height} image")
    cfg = m.vqvae.config
    s, b = cfg.stride, cfg.level_stride(0)
    shapes = m.vqvae.code_shapes(head.height, head.width)
    ph, pw = shapes[0][0] * b, shapes[0][1] * b
    wy0, wx0 = max(0, (y - DECODER_REACH) // s * s), max(0, (x - DECODER_REACH) // s * s)
    wy1, wx1 = min(ph, -(-(y + h + DECODER_REACH) // s) * s), min(pw, -(-(x + w + DECODER_REACH) // s) * s)
    tiles = tile_grid(shapes[0][0], shapes[0][1], head.tile_size)
    needed = {
        k for k, t in enumerate(tiles)
        if t.row < wy1 // b and t.row + t.height > wy0 // b and t.col < wx1 // b and t.col + t.width > wx0 // b
    }
    maps = decode_tiles(m.priors, shapes, payloads, head.tile_size, only=needed - skip, order=head.symbol_order)
    recon = m.vqvae.decode(crop_codes(m.vqvae, maps, wy0, wy1, wx0, wx1), wy1 - wy0, wx1 - wx0)
    return recon[:, :, y - wy0 : y - wy0 + h, x - wx0 : x - wx0 + w]


@torch.no_grad()
def decompress_image(
    data: bytes,
    model: ModelSpec = None,
    device: str = "cpu",
    region: tuple[int, int, int, int] | None = None,
    salvage: bool = False,
    model_dirs: tuple[Path, ...] = (),
) -> ImageData:
    """Decode a vqcodec bitstream to pixels with the file's bit depth, channels and ICC profile.
    Without ``model`` the installed model whose fingerprint the file records is used.
    ``region`` = (x, y, width, height) decodes only that part, touching only the tiles under it.
    A tile payload that fails its checksum is a VQCodecError, unless ``salvage``: then the damaged
    tiles are not decoded (their codes stay 0, so their area shows no image content), every other
    tile decodes exactly as from the intact file, and the result's ``damaged_tiles`` lists them."""
    stream = unpack(bytes(data), salvage=salvage)
    head = stream.header
    m = model_for(head, model, device, model_dirs)
    shapes = m.vqvae.code_shapes(head.height, head.width)
    payloads = list(stream.tiles)
    only = set(range(len(payloads))) - set(stream.damaged) if stream.damaged else None
    if region is not None:
        recon = _decode_region(m, head, payloads, region, frozenset(stream.damaged))
    else:
        maps = decode_tiles(m.priors, shapes, payloads, head.tile_size, only=only, order=head.symbol_order)
        if head.height * head.width > WINDOW_ABOVE:
            recon = decode_windowed(m.vqvae, maps, head.height, head.width)
        else:
            recon = m.vqvae.decode(maps, head.height, head.width)
    pixels = from_model_output(recon.cpu(), head.channels, head.bit_depth)
    return ImageData(pixels, head.bit_depth, head.icc_profile, stream.damaged)


def decompress(
    data: bytes,
    model: ModelSpec = None,
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
