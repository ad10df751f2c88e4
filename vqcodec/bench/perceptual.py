"""The benchmark's perceptual metric: ColorVideoVDP (Mantiuk et al., SIGGRAPH 2024), when installed.

Why this metric: PSNR and MS-SSIM reward a codec for matching pixels, which a VQ codec trades for
textures that look right at low rates. ColorVideoVDP is a model of human vision (contrast
sensitivity in colour, masking) calibrated on large sets of human quality judgements, and answers
in JOD (just-objectionable differences): 10 means no visible difference from the original, and
one JOD less means that 75 % of observers would prefer the higher-scoring image. Its parameters
ship inside the ``cvvdp`` package, so it runs without any download. It sees an image as shown on
a display at a viewing distance, so the value depends on the display: we use the package's
default, ``standard_4k`` (a 30-inch 4K monitor of 200 cd/m² seen from 0.75 m in office light,
75.4 pixels per degree), with each image shown at its own size, and compute it on the CPU.

Why the import is not a plain ``import pycvvdp``: pycvvdp imports torchvision for two pure-Python
helpers (``GaussianBlur`` and ``MLP``). The only torchvision release for torch 2.13.0 in this
project's package sources (0.28.0) is built against torch's CUDA build; beside the CPU build its
C++ ops cannot load, and ``import torchvision`` then fails in ``torchvision._meta_registrations``
(``operator torchvision::nms does not exist``), which registers torch.compile fake kernels for
those missing detection ops. ColorVideoVDP never calls them, so when, and only when, that import
fails this way, torchvision is imported with that one module replaced by an empty one
(``_import_pycvvdp``). A torchvision whose ops load is imported untouched.

``vqcodec.bench.report`` and ``plot`` read the values by ``KEY`` and never import this package's
dependencies; only ``ColorVideoVDP()`` does.
"""

from __future__ import annotations

import sys
import types
from importlib import metadata

import numpy as np

KEY = "cvvdp"  # the results key in NAME.json and the column of NAME-images.csv
LABEL = "CVVDP"
UNIT = "JOD"
DISPLAY = "standard_4k"
MIN_SIDE = 2  # pycvvdp 0.5.7 fails inside its pyramid on an image 1 pixel high or wide


def _import_pycvvdp() -> types.ModuleType:
    """pycvvdp, imported beside the CPU build of torch (see the module docstring for why)."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        stub = "torchvision._meta_registrations"
        sys.modules[stub] = types.ModuleType(stub, "left empty: torchvision's C++ ops are not loaded (vqcodec)")
        import torchvision  # noqa: F401
    import pycvvdp

    return pycvvdp


def unavailable() -> str | None:
    """None when ColorVideoVDP runs here, else why not, in a few words for a 'skipped' line."""
    try:
        _import_pycvvdp()
    except ImportError as err:
        return f"ColorVideoVDP is not installed (no module {err.name or err}): pip install 'vqcodec[bench]'"
    except Exception as err:  # a broken install must not stop a benchmark that can run without it
        return f"ColorVideoVDP does not import here: {type(err).__name__}: {err}"
    return None


class ColorVideoVDP:
    """ColorVideoVDP of a decoded image against its original, in JOD (10 = no visible difference).

    One instance scores one image at a time; its torch computations use torch's thread count.
    """

    def __init__(self, display: str = DISPLAY) -> None:
        import torch

        pycvvdp = _import_pycvvdp()
        self.display = display
        self.version = metadata.version("cvvdp")
        self._metric = pycvvdp.cvvdp(display_name=display, device=torch.device("cpu"), quiet=True)

    @property
    def description(self) -> str:
        """What a reader needs to compare the values with other reports: version, unit and display."""
        return f"ColorVideoVDP {self.version}, {UNIT} (10 = no visible difference), display {self.display}"

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> float:
        """The JOD of ``decoded`` against ``reference``, both (H, W, 3) uint8 sRGB; NaN for an image
        with a side under ``MIN_SIDE``, which ColorVideoVDP cannot score, so that one odd image
        blanks its means (NaN, null in JSON) instead of stopping a long benchmark at its end."""
        import torch

        for name, a in (("reference", reference), ("decoded", decoded)):
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise ValueError(f"ColorVideoVDP takes (H, W, 3) uint8 images; the {name} is {a.shape} {a.dtype}")
        if reference.shape != decoded.shape:
            raise ValueError(f"images differ in shape: {reference.shape} vs {decoded.shape}")
        if min(reference.shape[:2]) < MIN_SIDE:
            return float("nan")
        with torch.no_grad():
            jod, _ = self._metric.predict(np.ascontiguousarray(decoded), np.ascontiguousarray(reference),
                                          dim_order="HWC")
        return float(jod)
