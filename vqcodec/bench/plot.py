"""The rate-distortion plot: PSNR and MS-SSIM (dB) against bpp, one line per codec, and a third
panel of ColorVideoVDP (JOD) against bpp when any curve has it.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no GUI backend, no global state),
at a size that stays legible when a README shows it about 900 px wide. MS-SSIM is plotted as
-10 log10(1 - MS-SSIM), as compression papers do, so differences near 1 stay visible. The third
panel widens the figure rather than shrinking the other two, so the PSNR and MS-SSIM panels look
the same with and without it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from vqcodec.bench.perceptual import LABEL as CVVDP
from vqcodec.bench.perceptual import UNIT as JOD
from vqcodec.bench.report import Curve, ms_ssim_db
from vqcodec.errors import VQCodecError

SIZE_PX = (1200, 500)  # width, height of the PNG with two panels
SIZE_PX_PERCEPTUAL = (1800, 500)  # with the third, ColorVideoVDP panel
DPI = 100
MARKERS = "os^Dvp<>hX"


def require() -> None:
    """Fail early, with an install hint, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VQCodecError("the benchmark plot needs matplotlib: pip install 'vqcodec[bench]'") from None


def plot_png(curves: Sequence[Curve], title: str = "") -> bytes:
    """PNG bytes of the panels for ``curves`` (references dashed, vqcodec drawn on top): PSNR and
    MS-SSIM, and CVVDP when any curve has it."""
    require()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    perceptual = any(c.cvvdp for c in curves)
    size = SIZE_PX_PERCEPTUAL if perceptual else SIZE_PX
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, 3 if perceptual else 2))
    ax_psnr, ax_ms = axes[:2]
    others = [c for c in curves if c.name != "vqcodec" or c.reference]
    ordered = others + [c for c in curves if c not in others]  # vqcodec last, so on top
    for i, c in enumerate(ordered):
        is_vq = c.name == "vqcodec" and not c.reference
        style = {
            "marker": "*" if is_vq else MARKERS[i % len(MARKERS)],
            "markersize": 16 if is_vq else 6,
            "linestyle": "--" if c.reference else "-",
            "linewidth": 2.5 if is_vq else 1.5,
            "color": "black" if is_vq else f"C{i % 10}",
            "label": c.label,
            "zorder": 3 if is_vq else 2,
        }
        ax_psnr.plot(c.bpp, c.psnr, **style)
        ms = [(b, ms_ssim_db(v)) for b, v in zip(c.bpp, c.ms_ssim) if math.isfinite(v)]
        if ms:
            ax_ms.plot([b for b, _ in ms], [v for _, v in ms], **style)
        jod = [(b, v) for b, v in zip(c.bpp, c.cvvdp) if math.isfinite(v)]
        if jod:
            axes[2].plot([b for b, _ in jod], [v for _, v in jod], **style)
    ylabels = ["PSNR (dB)", "MS-SSIM (dB) = −10·log10(1 − MS-SSIM)", f"{CVVDP} ({JOD}; 10 = no visible difference)"]
    for ax, ylabel in zip(axes, ylabels):
        ax.set_xlabel("bits per pixel (bpp)", fontsize=12)
        ax.set_ylabel(ylabel, fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(True, alpha=0.35)
        ax.set_xlim(left=0)
    measured = [b for c in curves if not c.reference for b in c.bpp]
    if measured:  # published curves often reach 2-3 bpp; keep the axis on the rates measured here
        for ax in axes:
            ax.set_xlim(0, max(measured) * 1.08)
    ax_psnr.legend(fontsize=10, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
