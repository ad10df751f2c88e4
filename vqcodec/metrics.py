"""Image quality metrics: PSNR and multi-scale SSIM, in plain numpy (float64).

``ms_ssim`` follows Wang, Simoncelli & Bovik (2003) with the conventions of pytorch-msssim, which
CompressAI and most learned-compression papers report: 5 scales with weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11x11 Gaussian window (sigma 1.5) applied without
padding ("valid"), K1=0.01, K2=0.03, the contrast-structure term of scales 1-4 and the full SSIM of
scale 5 clipped at 0, 2x2 average pooling between scales (odd sides zero-padded by one pixel on
both edges with the padding counted in the average, as ``F.avg_pool2d(x, 2, padding=s % 2)``
does), computed per channel and averaged over channels. For images whose shorter side is > 160
(every image pytorch-msssim accepts, e.g. Kodak) the result is the same as pytorch-msssim's.

Small images (our choice, pytorch-msssim refuses them): the number of scales is the largest
n <= 5 for which the coarsest scale still has both sides >= 11, and the weights of the scales used
are renormalized to sum to 1 (with one scale this is plain SSIM). When a side is shorter than 11
even at full resolution, the window along that axis is a Gaussian (sigma 1.5) of the image's
length, centred and renormalized, so a 1x1 image gives the SSIM luminance term of its pixel pair.
"""

from __future__ import annotations

import numpy as np

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5
K1 = 0.01
K2 = 0.03


def _peak(a: np.ndarray, peak: float | None) -> float:
    if peak is not None:
        return float(peak)
    if np.issubdtype(a.dtype, np.integer):
        return float(np.iinfo(a.dtype).max)
    raise ValueError(f"peak must be given for arrays of dtype {a.dtype}")


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"images must be non-empty (H, W) or (H, W, C) arrays, not {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB over all pixels and channels; ``peak`` defaults to the integer dtype's maximum.

    Returns ``inf`` for identical images.
    """
    a, b = _check_pair(a, b)
    p = _peak(a, peak)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(p * p / mse))


def gaussian_window(size: int, sigma: float = WIN_SIGMA) -> np.ndarray:
    """Normalized 1-D Gaussian of ``size`` taps centred on the middle (as pytorch-msssim for odd sizes)."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g_h: np.ndarray, g_w: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of the last two axes of ``x`` with ``g_h`` (rows) then ``g_w`` (columns)."""
    oh = x.shape[-2] - len(g_h) + 1
    acc = np.multiply(x[..., 0:oh, :], g_h[0])
    tmp = np.empty_like(acc)
    for i in range(1, len(g_h)):
        acc += np.multiply(x[..., i : i + oh, :], g_h[i], out=tmp)
    ow = acc.shape[-1] - len(g_w) + 1
    out = np.multiply(acc[..., 0:ow], g_w[0])
    tmp = np.empty_like(out)
    for j in range(1, len(g_w)):
        out += np.multiply(acc[..., j : j + ow], g_w[j], out=tmp)
    return out


def _ssim_cs(x: np.ndarray, y: np.ndarray, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of (C, H, W) float64 images."""
    h, w = x.shape[-2:]
    g_h = gaussian_window(min(WIN_SIZE, h))
    g_w = gaussian_window(min(WIN_SIZE, w))
    c1 = (K1 * peak) ** 2
    c2 = (K2 * peak) ** 2
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(np.stack([x, y, x * x, y * y, x * y]), g_h, g_w)
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    mu_xy = mu_x * mu_y
    cs_map = (2.0 * (e_xy - mu_xy) + c2) / ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
    ssim_map = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map.mean(axis=(-2, -1)), cs_map.mean(axis=(-2, -1))


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling of the last two axes; an odd side is zero-padded by 1 on both edges first."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return 0.25 * (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2])


def ms_ssim_scales(height: int, width: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Number of scales used for an image of this size: the most (<= max_scales) whose coarsest side is >= 11."""
    n, side = 1, min(height, width)
    while n < max_scales:
        side = (side + 1) // 2
        if side < WIN_SIZE:
            break
        n += 1
    return n


def ms_ssim(a: np.ndarray, b: np.ndarray, peak: float | None = None) -> float:
    """Multi-scale SSIM of two (H, W) or (H, W, C) images, averaged over channels (1.0 = identical).

    ``peak`` defaults to the integer dtype's maximum. Images too small for 5 scales use fewer
    scales with renormalized weights (see the module docstring).
    """
    a, b = _check_pair(a, b)
    p = _peak(a, peak)
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[None], y[None]
    else:
        x, y = np.moveaxis(x, -1, 0), np.moveaxis(y, -1, 0)
    levels = ms_ssim_scales(*x.shape[-2:])
    weights = np.asarray(MS_SSIM_WEIGHTS[:levels], dtype=np.float64)
    if levels < len(MS_SSIM_WEIGHTS):
        weights /= weights.sum()  # the 5 standard weights sum to 1.0001 and are used as published
    terms = []
    for i in range(levels):
        ssim_c, cs_c = _ssim_cs(x, y, p)
        if i < levels - 1:
            terms.append(np.maximum(cs_c, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    terms.append(np.maximum(ssim_c, 0.0))
    per_channel = np.prod(np.stack(terms) ** weights[:, None], axis=0)
    return float(per_channel.mean())
