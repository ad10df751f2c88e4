"""vqcodec: a learned image codec built on VQ-VAE-2 with PixelCNN priors and range coding.

>>> import vqcodec
>>> data = vqcodec.compress("photo.png")          # bytes
>>> pixels = vqcodec.decompress(data)             # numpy array, (H, W) or (H, W, 3)
>>> PIL.Image.open("photo.vqc")                   # the Pillow plugin is registered on import

The codec functions are imported on first use, so ``import vqcodec`` (and the command line's
``--help``) does not pay for loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.pillow_plugin import register as _register_pillow_plugin

_register_pillow_plugin()  # PIL.Image.open("x.vqc") works after `import vqcodec`

_LAZY = {
    "compress": "vqcodec.codec", "decompress": "vqcodec.codec", "decompress_image": "vqcodec.codec",
    "ImageData": "vqcodec.imageio", "read_image": "vqcodec.imageio", "write_image": "vqcodec.imageio",
}

__all__ = ["VQCodecError", "VQCodecWarning", *_LAZY]
__version__ = "0.6.1"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vqcodec' has no attribute {name!r}")
