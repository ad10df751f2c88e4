"""Pillow plugin: after ``import vqcodec``, ``PIL.Image.open("photo.vqc")`` decodes .vqc files.

The header is read when the file is opened (size and mode without decoding); pixels are decoded on
first access, with the installed model whose fingerprint the file records. Pillow has no 16-bit
RGB mode, so 16-bit RGB files open as 8-bit RGB (use ``vqcodec.decompress`` for all 16 bits);
16-bit gray opens as ``I;16``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFile

from vqcodec.coding.bitstream import MAGIC, read_header
from vqcodec.errors import VQCodecError


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
            raise SyntaxError(str(err)) from None
        self._vqc_data: bytes | None = data
        self._size = (head.width, head.height)
        self._mode = "RGB" if head.channels == 3 else ("I;16" if head.bit_depth == 16 else "L")
        if head.icc_profile:
            self.info["icc_profile"] = head.icc_profile
        self.tile = []

    def load(self):  # noqa: ANN201 - Pillow's own signature
        if self._vqc_data is not None:
            from vqcodec.codec import decompress_image

            image = decompress_image(self._vqc_data)
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


def register() -> None:
    Image.register_open(VqcImageFile.format, VqcImageFile, _accept)
    Image.register_extension(VqcImageFile.format, ".vqc")
    Image.register_mime(VqcImageFile.format, "image/x-vqc")
