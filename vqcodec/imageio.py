"""Read and write the image files vqcodec codes, normalised to gray or RGB pixels of 8 or 16 bits.

Policy, so that every file either becomes an exact ``ImageData`` or fails with a clear ``VQCodecError``:

- Formats: PNG, JPEG, TIFF, WebP, BMP and (to read) GIF, recognised by their magic bytes (a file's
  extension is ignored on read). TIFF is read with tifffile, 16-bit PNG with imagecodecs (Pillow would cut 48-bit RGB
  to 8 bits), everything else with Pillow, which is made to decode fully so truncation is detected.
- Animations (APNG, animated WebP, GIF with several frames) are refused: vqcodec codes still
  images, and coding only the first frame would silently lose the rest.
- EXIF/TIFF orientation is applied to the pixels, then forgotten.
- Palette images become RGB, or gray when every palette entry in use is gray (and no RGB ICC
  profile is attached).
- Alpha (gray+alpha, RGBA, palette or tRNS transparency): a fully opaque alpha carries no information
  and is dropped; any transparent pixel makes us refuse the image rather than guess a background.
- 1-bit images become 8-bit gray (0/255). CMYK, YCbCr, Lab, ... are converted to RGB by Pillow,
  without colour management. 32-bit integer, signed and floating-point images are refused.
- TIFF: a file of several pages is refused, as animations are (coding page 1 would silently lose
  the rest); reduced-resolution pages (thumbnails) do not count. Gray or RGB with at most one extra
  sample (taken as alpha); more channels are refused. MinIsWhite is inverted. Palette/CMYK/YCbCr
  TIFFs go through Pillow. Samples of other widths stored in uint16 (e.g. 12-bit) keep their values
  and get bit_depth 16.
- ICC profile: kept when its colour space matches the pixels (RGB for 3 channels, GRAY for 1),
  dropped otherwise (e.g. a CMYK profile after conversion to RGB), with a ``VQCodecWarning`` naming
  the file. Written back to PNG, TIFF, WebP and JPEG; BMP cannot carry it.
- Writing: only PNG and TIFF keep 16 bits, other formats refuse 16-bit images. Gray stays gray except
  in WebP, which has no gray mode (it is stored, and read back, as RGB). JPEG is written at quality 95
  without chroma subsampling, WebP losslessly, TIFF with lossless deflate.
- Size: Pillow's ``Image.MAX_IMAGE_PIXELS`` decompression-bomb limit applies to every reader.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import tifffile
from PIL import Image, ImageOps

from vqcodec.atomic import atomic_write_bytes
from vqcodec.errors import VQCodecError, VQCodecWarning

if TYPE_CHECKING:  # torch is imported where tensors are made, so the command line can read the lists below fast
    import torch

# The one list of output formats and their extensions (the first one is what a folder output gets):
# --format, the -o help and docs/cli.md all come from it.
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "png": (".png",), "tiff": (".tiff", ".tif"), "webp": (".webp",), "bmp": (".bmp",),
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
}
FORMATS = tuple(FORMAT_SUFFIXES)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}  # what a folder of images holds
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}
_ANIMATED = ("png", "webp", "gif")  # formats whose extra frames are an animation (TIFF pages are not)
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}  # not "A" in the mode: LAB's A is a colour channel
_EXTENSIONS = {suffix: fmt for fmt, suffixes in FORMAT_SUFFIXES.items() for suffix in suffixes}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"),
    (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),
    (b"GIF87a", "gif"), (b"GIF89a", "gif"),
)
_ORIENTATION_TAG = 274
_ICC_TAG = 34675
_TRANSPARENT = "has a transparent alpha channel; vqcodec codes gray or RGB images only (flatten it first)"


@dataclass
class ImageData:
    """Decoded pixels plus what the codec must carry along to reproduce the file faithfully."""

    pixels: np.ndarray  # (H, W, C) uint8 or uint16, C is 1 (gray) or 3 (RGB), C-contiguous
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None  # ICC profile from the file, kept so the codec can store it
    damaged_tiles: tuple[int, ...] = ()  # set by a salvage decode: tiles that could not be restored


# ---------------------------------------------------------------------------------------------- reading


def read_image(source: str | os.PathLike | bytes | BinaryIO) -> ImageData:
    """Decode a file, bytes or binary stream into gray/RGB pixels, following the module's policy."""
    data, name = read_source(source)
    if not data:
        raise VQCodecError(f"{name} is empty (0 bytes)")
    fmt = _sniff(data)
    if fmt is None:
        raise VQCodecError(f"{name} is not a PNG, JPEG, TIFF, WebP, GIF or BMP image")
    try:
        decoded = _decode_tiff(data, name) if fmt == "tiff" else None
        pixels, icc = decoded if decoded is not None else _decode_pillow(data, fmt, name)
    except VQCodecError:
        raise
    except Image.DecompressionBombError as e:
        raise VQCodecError(f"{name} is too large to decode safely: {e}") from e
    except Exception as e:  # decoders raise OSError, ValueError, zlib/struct errors, ...
        detail = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "it", str(e))  # Pillow names our buffer
        raise VQCodecError(f"cannot read {name} as {fmt.upper()} (corrupt or truncated?): {detail}") from e
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or pixels.dtype.kind != "u" or pixels.itemsize > 2:
        raise VQCodecError(f"{name}: unsupported pixel layout {pixels.shape} {pixels.dtype}")
    bit_depth = 8 * pixels.itemsize
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8 if bit_depth == 8 else np.uint16)
    return ImageData(pixels, bit_depth, _kept_icc(icc, pixels.shape[2], name))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VQCodecError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise VQCodecError(f"no images found under {folder}")
    return files


def read_source(source: str | os.PathLike | bytes | BinaryIO, what: str = "an image file") -> tuple[bytes, str]:
    """(all the bytes, a name for messages) of bytes, a path or an open binary file: one place to
    turn I/O failures into VQCodecError, for images and .vqc files (``what`` names the expected kind)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise VQCodecError(f"{path} is a directory, not {what}")
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError as e:
            raise VQCodecError(f"{path}: no such file") from e
        except OSError as e:
            raise VQCodecError(f"cannot read {path}: {e.strerror or e}") from e
    name = str(getattr(source, "name", "<stream>"))
    try:
        data = source.read()
    except (OSError, ValueError) as e:
        raise VQCodecError(f"cannot read {name}: {e}") from e
    if not isinstance(data, (bytes, bytearray)):
        raise VQCodecError(f"{name} is not a binary stream (open it with 'rb')")
    return bytes(data), name


def _sniff(data: bytes) -> str | None:
    """Trust the content, not the name: misnamed files are common."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def _decode_pillow(data: bytes, fmt: str, name: str) -> tuple[np.ndarray, bytes | None]:
    with Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]]) as im:
        frames = getattr(im, "n_frames", 1) if fmt in _ANIMATED else 1
        if frames > 1:
            raise VQCodecError(f"{name} is an animation of {frames} frames; vqcodec codes still images only "
                               "(save the frame you want as its own image first)")
        im.load()  # full decode: lazy loading would hide truncation
        icc = im.info.get("icc_profile")
        orientation = _pillow_orientation(im)
        if fmt == "png" and _png_bit_depth(data) == 16:
            pixels = _png16_pixels(data, im.info.get("transparency"), name)
            return _orient(pixels, orientation), icc
        if orientation != 1:
            ImageOps.exif_transpose(im, in_place=True)
        return _pillow_pixels(im, icc, name), icc


def _pillow_orientation(im: Image.Image) -> int:
    """Malformed EXIF should not make a readable image unreadable: treat it as 'no orientation'."""
    try:
        value = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _pillow_pixels(im: Image.Image, icc: bytes | None, name: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I", "F") or mode.startswith(("I;32", "F;")):
        raise VQCodecError(f"{name} is a 32-bit integer or floating-point image; "
                           "vqcodec codes 8- or 16-bit images only")
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None]  # astype also fixes big-endian I;16B
    if mode == "1":
        im, mode = im.convert("L"), "L"
    transparent = (mode in _ALPHA_MODES or "transparency" in im.info
                   or (mode == "P" and im.palette is not None and im.palette.mode == "RGBA"))
    if mode == "L" and not transparent:
        return np.asarray(im)[..., None]
    gray = mode in ("L", "LA", "La") or (mode in ("P", "PA") and _icc_space(icc) != b"RGB "
                                         and _palette_is_gray(im))
    pixels = np.asarray(im.convert("RGBA" if transparent else "RGB"))
    if transparent:
        pixels = _drop_opaque_alpha(pixels, 255, name)
    return pixels[..., :1] if gray else pixels


def from_pil(im: Image.Image, name: str = "image") -> ImageData:
    """An in-memory PIL image under the same policy as files (modes, palette, alpha, 16-bit, ICC)."""
    icc = im.info.get("icc_profile")
    pixels = np.ascontiguousarray(_pillow_pixels(im, icc, name))
    return ImageData(pixels, 16 if pixels.dtype == np.uint16 else 8, _kept_icc(icc, pixels.shape[2], name))


def from_array(pixels: np.ndarray) -> ImageData:
    """A uint8/uint16 array of shape (H, W), (H, W, 1) or (H, W, 3), checked like written images."""
    if pixels.dtype not in (np.uint8, np.uint16):
        raise VQCodecError(f"image arrays must be uint8 or uint16, not {pixels.dtype}")
    bit_depth = 8 if pixels.dtype == np.uint8 else 16
    image = ImageData(pixels[..., None] if pixels.ndim == 2 else pixels, bit_depth, None)
    return ImageData(_checked_pixels(image), bit_depth, None)


def _palette_is_gray(im: Image.Image) -> bool:
    palette = im.getpalette("RGB")
    if not palette:
        return False
    entries = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    index = np.asarray(im)
    used = np.unique(index[..., 0] if index.ndim == 3 else index)
    used = entries[used[used < len(entries)]]
    return bool((used == used[:, :1]).all())


def _png_bit_depth(data: bytes) -> int:
    return data[24] if len(data) > 25 and data[12:16] == b"IHDR" else 0


def _png16_pixels(data: bytes, transparency: object, name: str) -> np.ndarray:
    """Exact 16-bit decode; a tRNS colour key counts as alpha (libpng usually expands it already)."""
    import imagecodecs  # only 16-bit PNG needs it; imported late so the rest works without it

    pixels = imagecodecs.png_decode(data)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if transparency is not None and channels in (1, 3):
        key = np.asarray(transparency if isinstance(transparency, tuple) else (transparency,))
        if key.size == channels and (pixels == key.astype(pixels.dtype)).all(axis=2).any():
            raise VQCodecError(f"{name} {_TRANSPARENT}")
    if channels in (2, 4):
        pixels = _drop_opaque_alpha(pixels, np.iinfo(pixels.dtype).max, name)
    return pixels


def _decode_tiff(data: bytes, name: str) -> tuple[np.ndarray, bytes | None] | None:
    """Decode gray/RGB TIFF pages with tifffile (exact 16-bit); None means 'let Pillow convert it'."""
    photometric = tifffile.PHOTOMETRIC
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = sum(1 for p in tif.pages if not p.is_reduced)  # thumbnails do not count
        if pages > 1:
            raise VQCodecError(f"{name} is a TIFF of {pages} pages; vqcodec codes one image only "
                               "(save the page you want as its own image first)")
        page = tif.pages[0]
        if page.photometric not in (photometric.MINISBLACK, photometric.MINISWHITE, photometric.RGB):
            return None
        dtype = page.dtype
        if dtype is None or dtype not in (np.uint8, np.uint16, np.bool_):
            kind = f"{page.bitspersample}-bit {dtype}" if dtype is not None else f"{page.bitspersample}-bit"
            raise VQCodecError(f"{name} has {kind} samples; vqcodec codes 8- or 16-bit unsigned images only")
        _check_size(page.imagewidth, page.imagelength, name)
        pixels = page.asarray()
        icc_tag = page.tags.get(_ICC_TAG)
        orientation_tag = page.tags.get(_ORIENTATION_TAG)
        axes, bits, is_rgb = page.axes, page.bitspersample, page.photometric == photometric.RGB
        miniswhite = page.photometric == photometric.MINISWHITE
    if axes == "SYX":
        pixels, axes = np.moveaxis(pixels, 0, -1), "YXS"
    if axes == "YX":
        pixels = pixels[..., None]
    elif axes != "YXS":
        raise VQCodecError(f"{name}: unsupported TIFF layout {axes!r} (expected a 2-D gray or colour page)")
    channels = pixels.shape[2]
    if channels not in ((3, 4) if is_rgb else (1, 2)):
        raise VQCodecError(f"{name} has {channels} channels; vqcodec codes gray or RGB images "
                           "(with at most one alpha channel) only")
    if pixels.dtype == np.bool_:
        pixels, bits = pixels.astype(np.uint8) * np.uint8(255), 8
    full = (1 << bits) - 1
    if miniswhite:
        pixels = pixels.copy()
        pixels[..., :1] = full - pixels[..., :1]
    if channels in (2, 4):
        pixels = _drop_opaque_alpha(pixels, full, name)
    orientation = int(orientation_tag.value) if orientation_tag is not None else 1
    icc = bytes(icc_tag.value) if icc_tag is not None and isinstance(icc_tag.value, bytes) else None
    return _orient(pixels, orientation), icc


def _check_size(width: int, height: int, name: str) -> None:
    """Same decompression-bomb guard as Pillow, for the readers that bypass Pillow."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > 2 * limit:
        raise VQCodecError(f"{name} is too large to decode safely: {width}x{height} pixels, over the "
                           f"limit of {2 * limit} (twice PIL.Image.MAX_IMAGE_PIXELS)")


def _drop_opaque_alpha(pixels: np.ndarray, full: int, name: str) -> np.ndarray:
    if not (pixels[..., -1] == full).all():
        raise VQCodecError(f"{name} {_TRANSPARENT}")
    return pixels[..., :-1]


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The numpy twin of PIL.ImageOps.exif_transpose, for pixels Pillow did not decode."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(pixels)) if op else pixels


def _icc_space(icc: bytes | None) -> bytes | None:
    """The 4-byte colour-space signature of an ICC profile (b'RGB ', b'GRAY', b'CMYK', ...)."""
    return bytes(icc[16:20]) if icc and len(icc) >= 128 else None


def _matching_icc(icc: bytes | None, channels: int) -> bytes | None:
    """A profile for another colour space would mis-colour the pixels, so it is dropped."""
    return bytes(icc) if _icc_space(icc) == (b"GRAY" if channels == 1 else b"RGB ") else None


def _kept_icc(icc: bytes | None, channels: int, name: str) -> bytes | None:
    """``_matching_icc`` for a file read: a profile dropped is said, since the colours may then
    look different (e.g. a CMYK JPEG converted to RGB without colour management)."""
    kept = _matching_icc(icc, channels)
    if icc and kept is None:
        space = (_icc_space(icc) or b"unreadable").decode("latin-1").strip()
        pixels = "gray" if channels == 1 else "RGB"
        warnings.warn(VQCodecWarning(f"{name}: its {space} ICC profile does not describe the {pixels} pixels "
                                     "coded, so it is dropped (colours are not managed)"), stacklevel=3)
    return kept


# ---------------------------------------------------------------------------------------------- writing


def format_of_suffix(path: str | os.PathLike) -> str | None:
    """The image format a file name's extension names (one of ``FORMATS``), or None."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def format_names() -> str:
    """The output formats with their extensions, for messages and help: 'png (.png), tiff (.tiff, .tif), ...'."""
    return ", ".join(f"{fmt} ({', '.join(suffixes)})" for fmt, suffixes in FORMAT_SUFFIXES.items())


def format_from_path(path: str | os.PathLike) -> str:
    """Output format from the file extension: one of ``FORMATS``."""
    fmt = format_of_suffix(path)
    if fmt is None:
        raise VQCodecError(f"cannot tell the image format of {os.fspath(path)!r}: name it with the extension of "
                           f"one of {format_names()}")
    return fmt


def write_image(path: str | os.PathLike, image: ImageData, *, force: bool = False) -> None:
    """Encode by extension and write atomically; an existing file is kept unless ``force``."""
    fmt = format_from_path(path)
    atomic_write_bytes(path, encode_image(image, fmt), force=force)


def encode_image(image: ImageData, fmt: str) -> bytes:
    """Encode to bytes of one of ``FORMATS`` (also usable for stdout)."""
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt.lower(), fmt.lower())
    if fmt not in FORMATS:
        raise VQCodecError(f"unknown image format {fmt!r}; use one of {', '.join(FORMATS)}")
    pixels = _checked_pixels(image)
    check_encodable(fmt, pixels.shape[1], pixels.shape[0], image.bit_depth)
    icc = _matching_icc(image.icc_profile, pixels.shape[2])
    try:
        if fmt == "png":
            return _encode_png(pixels, icc)
        if fmt == "tiff":
            return _encode_tiff(pixels, icc)
        return _encode_pillow(pixels, fmt, icc)
    except Exception as e:  # e.g. WebP's 16383-pixel limit
        height, width = pixels.shape[:2]
        raise VQCodecError(f"cannot encode a {width}x{height} image as {fmt.upper()}: {e}") from e


_MAX_SIDES = {"webp": 16383, "jpeg": 65535}  # what the formats themselves can store


def check_encodable(fmt: str, width: int, height: int, bit_depth: int) -> None:
    """Refuse, before any decoding, an image that ``fmt`` cannot store (16 bits, or too large)."""
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt.lower(), fmt.lower())
    if bit_depth == 16 and fmt not in ("png", "tiff"):
        raise VQCodecError(f"{fmt.upper()} cannot store 16-bit images; only PNG and TIFF keep 16 bits")
    side = _MAX_SIDES.get(fmt)
    if side is not None and max(width, height) > side:
        raise VQCodecError(f"{fmt.upper()} cannot store a {width}x{height} image (at most {side} pixels a side)")


def _checked_pixels(image: ImageData) -> np.ndarray:
    pixels = np.asarray(image.pixels)
    dtype = {8: np.uint8, 16: np.uint16}.get(image.bit_depth)
    if dtype is None or pixels.dtype != dtype:
        raise VQCodecError(f"bit_depth {image.bit_depth} with {pixels.dtype} pixels; "
                           "expected 8 with uint8 or 16 with uint16")
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or 0 in pixels.shape:
        raise VQCodecError(f"pixels must be (H, W, 1) or (H, W, 3) with H, W >= 1, got {pixels.shape}")
    return np.ascontiguousarray(pixels, dtype=dtype)


def _encode_png(pixels: np.ndarray, icc: bytes | None) -> bytes:
    """imagecodecs writes 8- and 16-bit gray/RGB PNG exactly; the ICC chunk is added by hand."""
    plane = np.ascontiguousarray(pixels[..., 0]) if pixels.shape[2] == 1 else pixels
    import imagecodecs

    png = bytes(imagecodecs.png_encode(plane))
    if icc is None:
        return png
    body = b"ICC Profile\x00\x00" + zlib.compress(icc)  # name, NUL, compression method 0
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def _encode_tiff(pixels: np.ndarray, icc: bytes | None) -> bytes:
    gray = pixels.shape[2] == 1
    buf = io.BytesIO()
    tifffile.imwrite(
        buf, pixels[..., 0] if gray else pixels, photometric="minisblack" if gray else "rgb",
        compression="zlib", predictor=True, iccprofile=icc, metadata=None,
    )
    return buf.getvalue()


def _encode_pillow(pixels: np.ndarray, fmt: str, icc: bytes | None) -> bytes:
    im = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    options: dict[str, object] = {}
    if fmt == "webp":
        options["lossless"] = True
    elif fmt == "jpeg":
        options.update(quality=95, subsampling=0)
    if icc is not None and fmt != "bmp":
        options["icc_profile"] = icc
    buf = io.BytesIO()
    im.save(buf, format=_PIL_NAMES[fmt], **options)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- tensors


def _full_scale(bit_depth: int) -> int:
    if bit_depth not in (8, 16):
        raise VQCodecError(f"bit_depth must be 8 or 16, got {bit_depth}")
    return (1 << bit_depth) - 1


def to_tensor(pixels: np.ndarray, bit_depth: int) -> torch.Tensor:
    """(H, W, C) integers to float32 (1, C, H, W) in [0, 1]; exactly undone by ``from_tensor``."""
    import torch

    full = _full_scale(bit_depth)
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise VQCodecError(f"expected (H, W, C) integer pixels, got {arr.shape} {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > full):
        raise VQCodecError(f"pixel values outside 0..{full} for bit_depth {bit_depth}")
    t = torch.from_numpy(arr.astype(np.float32)) / full
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def from_tensor(t: torch.Tensor, bit_depth: int) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) floats to (H, W, C) uint8/uint16: round(clamp(t, 0, 1) * full)."""
    full = _full_scale(bit_depth)
    t = t.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise VQCodecError(f"expected a batch of one image, got shape {tuple(t.shape)}")
        t = t[0]
    if t.dim() != 3:
        raise VQCodecError(f"expected a (1, C, H, W) or (C, H, W) tensor, got shape {tuple(t.shape)}")
    import torch

    values = torch.round(torch.nan_to_num(t.float(), nan=0.0).clamp(0, 1) * full).to(torch.int32)
    arr = values.permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr.astype(np.uint8 if bit_depth == 8 else np.uint16))


def to_model_input(pixels: np.ndarray, bit_depth: int) -> torch.Tensor:
    """(H, W, 1|3) pixels to the RGB float input (1, 3, H, W) in [0, 1] of a model: gray is repeated
    to three channels. Codec, training and evaluation all go through this one conversion."""
    x = to_tensor(pixels, bit_depth)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


OUTPUT_ROWS = 256  # rows converted at once by from_model_output


def from_model_output(t: torch.Tensor, channels: int, bit_depth: int) -> np.ndarray:
    """A model's RGB output (1, 3, H, W) to (H, W, channels) pixels: clamped to [0, 1], gray as
    the mean of the three channels; the inverse of ``to_model_input``. Converted OUTPUT_ROWS rows
    at a time (each pixel on its own, so the same values): the whole image's float temporaries took
    three times the decoded image's memory (a 24-megapixel decode peaked at 1.57 GB here, 0.75 GB
    before it)."""
    t = t.detach()
    if t.dim() != 4 or t.shape[0] != 1:
        raise VQCodecError(f"expected a (1, C, H, W) tensor, got shape {tuple(t.shape)}")
    height, width = t.shape[2:]
    out = np.empty((height, width, channels), dtype=np.uint8 if bit_depth == 8 else np.uint16)
    for r in range(0, height, OUTPUT_ROWS):
        block = t[:, :, r : r + OUTPUT_ROWS].clamp(0, 1)
        out[r : r + OUTPUT_ROWS] = from_tensor(block.mean(1, keepdim=True) if channels == 1 else block, bit_depth)
    return out
