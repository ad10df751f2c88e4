"""vqcodec: a learned image codec built on VQ-VAE-2 with PixelCNN priors and range coding.

>>> import vqcodec
>>> data = vqcodec.compress("photo.png")          # bytes
>>> pixels = vqcodec.decompress(data)             # numpy array, (H, W) or (H, W, 3)
>>> PIL.Image.open("photo.vqc")                   # the Pillow plugin is registered on import
"""

from vqcodec.codec import compress, decompress, decompress_image
from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.imageio import ImageData, read_image, write_image
from vqcodec.pillow_plugin import register as _register_pillow_plugin

_register_pillow_plugin()  # PIL.Image.open("x.vqc") works after `import vqcodec`

__all__ = [
    "compress", "decompress", "decompress_image", "VQCodecError", "VQCodecWarning", "ImageData", "read_image",
    "write_image",
]
__version__ = "0.1.0"
