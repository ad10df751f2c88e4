"""Pillow plugin: after ``import vqcodec``, ``PIL.Image.open("photo.vqc")`` decodes .vqc files and
``image.save("photo.vqc")`` compresses (with the default model; ``save(..., model=..., tile=...)``
choose another model or tile size).

The header is read when the file is opened (size and mode without decoding); pixels are decoded on
first access, with the installed model whose fingerprint the file records. Pillow has no 16-bit
RGB mode, so 16-bit RGB files open as 8-bit RGB (use ``vqcodec.decompress`` for all 16 bits);
16-bit gray opens as ``I;16``.

Errors speak Pillow's language and ours at once: a file with our magic bytes whose header is
damaged raises ``UnidentifiedImageError`` carrying vqcodec's message, and any failure to decode or
save raises ``VqcError``, which is both an ``OSError`` (what Pillow users catch) and a
``VQCodecError``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from vqcodec.coding.bitstream import MAGIC, read_header
from vqcodec.errors import VQCodecError


class VqcError(VQCodecError, OSError):
    """A vqcodec failure inside Pillow: catch it as OSError or as VQCodecError."""


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class VqcImageFile(ImageFile.ImageFile):
    format = "VQC"
    format_description = "vqcodec learned image codec"

    def _open(self) -> None:
        data = self.fp.read()
        try:
            head = read_header(data)
        except VQCodecError as err:
            # not a SyntaxError: Pillow would swallow it and say only "cannot identify image file"
            name = getattr(self.fp, "name", None) or self.filename or "<stream>"
            raise UnidentifiedImageError(f"cannot identify image file {name!r}: vqcodec: {err}") from None
        self._vqc_data: bytes | None = data
        self._size = (head.width, head.height)
        self._mode = "RGB" if head.channels == 3 else ("I;16" if head.bit_depth == 16 else "L")
        if head.icc_profile:
            self.info["icc_profile"] = head.icc_profile
        self.tile = []

    def load(self):  # noqa: ANN201 - Pillow's own signature
        if self._vqc_data is not None:
            from vqcodec.codec import decompress_image

            try:
                image = decompress_image(self._vqc_data)
            except VQCodecError as err:
                raise VqcError(str(err)) from None
            pix = image.pixels
            if pix.shape[2] == 3:
                if image.bit_depth == 16:
                    pix = np.round(pix / 257.0).astype(np.uint8)
                decoded = Image.fromarray(pix)  # mode RGB
            elif image.bit_depth == 16:
                decoded = Image.fromarray(np.ascontiguousarray(pix[..., 0], dtype="<u2"))  # mode I;16
            else:
                decoded = Image.fromarray(np.ascontiguousarray(pix[..., 0]))  # mode L
            self.im = decoded.im
            self._vqc_data = None
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename) -> None:  # noqa: ANN001 - Pillow's save-handler signature
    """``Image.save(..., format="VQC")``: compress the image; encoder options ``model`` and ``tile``."""
    from vqcodec.codec import compress

    info = getattr(im, "encoderinfo", {}) or {}
    try:
        data = compress(im, info.get("model"), tile=info.get("tile"))
    except VQCodecError as err:
        raise VqcError(str(err)) from None
    fp.write(data)


def register() -> None:
    Image.register_open(VqcImageFile.format, VqcImageFile, _accept)
    Image.register_save(VqcImageFile.format, _save)
    Image.register_extension(VqcImageFile.format, ".vqc")
    Image.register_mime(VqcImageFile.format, "image/x-vqc")
