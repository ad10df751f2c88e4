"""Tests for vqcodec.metrics: PSNR and MS-SSIM against hand values and a slow loop-based reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vqcodec.metrics import ms_ssim, ms_ssim_scales, psnr

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def synthetic(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth image with edges and some texture (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 40 * ((xx // 23 + yy // 17) % 2)
    img = np.stack([base + 10 * c + rng.normal(0, 6, (h, w)) for c in range(channels)], axis=-1)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def noisy(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(img.shape)
    return np.clip(np.round(img + sigma * noise), 0, 255).astype(np.uint8)


# --- slow reference: explicit loops, direct 2-D window, written from the definition -------------


def ref_window(n: int, sigma: float = 1.5) -> list[float]:
    g = [math.exp(-((i - (n - 1) / 2) ** 2) / (2 * sigma * sigma)) for i in range(n)]
    s = sum(g)
    return [v / s for v in g]


def ref_ssim_cs(x: np.ndarray, y: np.ndarray, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and contrast-structure over every valid window position of (H, W, C) images."""
    h, w, _ = x.shape
    kh, kw = min(11, h), min(11, w)
    win = np.outer(ref_window(kh), ref_window(kw))[:, :, None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    ssim_sum = np.zeros(x.shape[2])
    cs_sum = np.zeros(x.shape[2])
    count = 0
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            px, py = x[i : i + kh, j : j + kw], y[i : i + kh, j : j + kw]
            mx, my = (win * px).sum((0, 1)), (win * py).sum((0, 1))
            vx = (win * px * px).sum((0, 1)) - mx * mx
            vy = (win * py * py).sum((0, 1)) - my * my
            cxy = (win * px * py).sum((0, 1)) - mx * my
            cs = (2 * cxy + c2) / (vx + vy + c2)
            ssim_sum += (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
            cs_sum += cs
            count += 1
    return ssim_sum / count, cs_sum / count


def ref_pool(x: np.ndarray) -> np.ndarray:
    """2x2 mean; odd sides zero-padded by one pixel on both edges, padding counted (avg_pool2d convention)."""
    h, w, c = x.shape
    ph, pw = h % 2, w % 2
    p = np.zeros((h + 2 * ph, w + 2 * pw, c))
    p[ph : ph + h, pw : pw + w] = x
    out = np.zeros(((h + 2 * ph) // 2, (w + 2 * pw) // 2, c))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = p[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((0, 1))
    return out


def ref_ms_ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    x = a.astype(np.float64).reshape(a.shape[0], a.shape[1], -1)
    y = b.astype(np.float64).reshape(b.shape[0], b.shape[1], -1)
    levels, side = 1, min(x.shape[:2])
    while levels < 5 and (side + 1) // 2 >= 11:
        side = (side + 1) // 2
        levels += 1
    weights = list(WEIGHTS[:levels])
    if levels < 5:
        weights = [v / sum(weights) for v in weights]
    result = np.ones(x.shape[2])
    for k in range(levels):
        s, cs = ref_ssim_cs(x, y, peak)
        if k < levels - 1:
            result *= np.maximum(cs, 0) ** weights[k]
            x, y = ref_pool(x), ref_pool(y)
        else:
            result *= np.maximum(s, 0) ** weights[k]
    return float(result.mean())


# --- PSNR ---------------------------------------------------------------------------------------


def test_psnr_identical_is_inf() -> None:
    img = synthetic(16, 20)
    assert psnr(img, img) == math.inf
    assert psnr(img[..., 0], img[..., 0].copy()) == math.inf


def test_psnr_hand_value() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 1, 2] = 12  # squared error 144 over 12 samples -> MSE 12
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 12), abs=1e-9)
    assert psnr(a, b, peak=255) == pytest.approx(37.3390, abs=1e-4)
    g = np.array([[0, 0], [0, 4]], np.uint16)  # MSE 4 with peak 65535
    assert psnr(np.zeros_like(g), g) == pytest.approx(20 * math.log10(65535 / 2), abs=1e-9)


def test_psnr_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


# --- MS-SSIM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 13, 3), (64, 48, 3), (170, 165, 3), (33, 40)])
def test_ms_ssim_identical_is_one(shape: tuple[int, ...]) -> None:
    img = synthetic(shape[0], shape[1], shape[2] if len(shape) == 3 else 1)
    if len(shape) == 2:
        img = img[..., 0]
    assert ms_ssim(img, img.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_decreases_with_noise() -> None:
    img = synthetic(176, 180)
    values = [ms_ssim(img, noisy(img, s)) for s in (0.5, 2, 5, 10, 20, 40, 80)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] < 1.0 and values[-1] > 0.0


@pytest.mark.slow
def test_ms_ssim_matches_slow_reference_five_scales() -> None:
    a = synthetic(165, 171, seed=3)  # odd sides: exercises the padded pooling; 165 -> 83 -> 42 -> 21 -> 11
    b = noisy(a, 15, seed=4)
    assert ms_ssim_scales(165, 171) == 5
    ref = ref_ms_ssim(a, b)
    assert 0.5 < ref < 0.99
    assert ms_ssim(a, b) == pytest.approx(ref, abs=1e-3)
    assert ms_ssim(a, b) == pytest.approx(ref, abs=1e-9)  # same arithmetic, so much closer than required


@pytest.mark.parametrize("shape", [(7, 13, 3), (1, 1, 3), (40, 50, 3), (12, 30, 1)])
def test_ms_ssim_small_images_match_reference(shape: tuple[int, int, int]) -> None:
    a = synthetic(*shape, seed=5)
    b = noisy(a, 10, seed=6)
    value = ms_ssim(a, b)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(ref_ms_ssim(a, b), abs=1e-3)


def test_ms_ssim_one_pixel_is_luminance_term() -> None:
    a = np.array([[[100, 50, 200]]], np.uint8)
    b = np.array([[[110, 50, 0]]], np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = np.mean([(2 * x * y + c1) / (x * x + y * y + c1) for x, y in [(100, 110), (50, 50), (200, 0)]])
    assert ms_ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_ms_ssim_scale_count() -> None:
    assert ms_ssim_scales(512, 768) == 5
    assert ms_ssim_scales(161, 161) == 5
    assert ms_ssim_scales(160, 400) == 4
    assert ms_ssim_scales(22, 22) == 2
    assert ms_ssim_scales(21, 21) == 2
    assert ms_ssim_scales(20, 20) == 1
    assert ms_ssim_scales(1, 1) == 1


# --- ColorVideoVDP (the benchmark's optional perceptual metric) -----------------------------------


def box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """A (2r+1)^2 box blur with replicated edges: a distortion every observer sees as blur."""
    pad = np.pad(img.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    k = 2 * radius + 1
    h, w = img.shape[:2]
    out = sum(pad[i : i + h, j : j + w] for i in range(k) for j in range(k)) / (k * k)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cvvdp():
    """The benchmark's ColorVideoVDP, or a skip where the [bench] extra's cvvdp is not installed."""
    from vqcodec.bench import perceptual

    why = perceptual.unavailable()
    if why is not None:
        pytest.skip(why)
    return perceptual.ColorVideoVDP()


def test_cvvdp_identical_scores_best_and_blur_scores_worse(cvvdp) -> None:
    img = synthetic(48, 64)
    same = cvvdp(img, img.copy())
    slight, strong = cvvdp(img, box_blur(img, 1)), cvvdp(img, box_blur(img, 3))
    assert same == pytest.approx(10.0, abs=1e-4)  # JOD: 10 = no visible difference, the best score
    assert 0.0 < strong < slight < same - 0.1, (same, slight, strong)


def test_cvvdp_refuses_what_is_not_two_rgb8_images_of_one_size(cvvdp) -> None:
    img = synthetic(16, 16)
    with pytest.raises(ValueError, match="differ in shape"):
        cvvdp(img, synthetic(16, 17))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        cvvdp(img[..., 0], img[..., 0])
    assert math.isnan(cvvdp(img[:1], img[:1]))  # too thin for ColorVideoVDP: no value rather than an error
