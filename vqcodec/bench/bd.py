"""Bjøntegaard deltas: the average bit saving (BD-rate) and quality gain (BD-PSNR) of one
rate-distortion curve over another, as video and image coding papers report them.

BD-rate (Bjøntegaard, VCEG-M33, 2001): interpolate log(rate) as a function of quality for both
curves, average the difference over the quality range the curves share, and turn it back into a
percentage: -10% means the test curve needs 10% fewer bits for the same quality. BD-PSNR swaps
the axes: quality as a function of log(rate), averaged over the shared log-rate range. The
interpolation is the piecewise cubic Hermite (PCHIP) of the JCT-VC/JVET common test conditions,
which unlike VCEG-M33's single cubic polynomial cannot overshoot between points; ``method="cubic"``
gives VCEG-M33's original. The computation itself is the ``bjontegaard`` package's (FAU-LMS,
which matches the JVET reference spreadsheet); this module adds the checks that decide when a
number would be meaningless, and says why instead of giving one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from vqcodec.errors import VQCodecError

METHOD = "pchip"
MIN_POINTS = {"pchip": 2, "akima": 2, "cubic": 4}  # a cubic polynomial through fewer than 4 points is underdetermined


class BDUnavailable(ValueError):
    """A Bjøntegaard delta that cannot be computed for these curves; the message says why."""


def _package():
    try:
        import bjontegaard
    except ImportError:
        raise VQCodecError("BD-rate needs the bjontegaard package: pip install 'vqcodec[bench]'") from None
    return bjontegaard


def require() -> None:
    """Fail early, with an install hint, when the package is missing."""
    _package()


def _curve(rate: Sequence[float], quality: Sequence[float], method: str, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by rate, checked for what the method needs."""
    if method not in MIN_POINTS:
        raise ValueError(f"unknown interpolation method {method!r}; choose from {', '.join(MIN_POINTS)}")
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"{who}: rates and qualities must be two lists of the same length")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    need = MIN_POINTS[method]
    if len(r) < need:
        raise BDUnavailable(f"{who} has {len(r)} rate-distortion point{'s' * (len(r) != 1)}; "
                            f"the {method} method needs at least {need}")
    order = np.argsort(r)
    r, q = r[order], q[order]
    if np.any(np.diff(r) <= 0) or np.any(np.diff(q) <= 0):
        raise BDUnavailable(f"{who}: quality does not rise strictly with rate, so the curve cannot be interpolated")
    return r, q


def _overlap(a: np.ndarray, b: np.ndarray, axis: str) -> None:
    if min(a.max(), b.max()) <= max(a.min(), b.min()):
        raise BDUnavailable(f"the curves share no {axis} range")


def _delta(base_a: np.ndarray, value_a: np.ndarray, base_b: np.ndarray, value_b: np.ndarray, method: str) -> float:
    bd = _package()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns about small overlaps; the report states the range
        return float(bd.bd_linear(base_a, value_a, base_b, value_b, method, require_matching_points=False,
                                  min_overlap=0.0))


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float], test_rate: Sequence[float],
            test_quality: Sequence[float], method: str = METHOD) -> float:
    """Average rate difference of test against anchor at equal quality, in percent (negative: the
    test codec needs fewer bits). Raises ``BDUnavailable`` when the curves do not allow it."""
    ra, qa = _curve(anchor_rate, anchor_quality, method, "the anchor curve")
    rt, qt = _curve(test_rate, test_quality, method, "the test curve")
    _overlap(qa, qt, "quality")
    return (10.0 ** _delta(qa, np.log10(ra), qt, np.log10(rt), method) - 1.0) * 100.0


def bd_psnr(anchor_rate: Sequence[float], anchor_quality: Sequence[float], test_rate: Sequence[float],
            test_quality: Sequence[float], method: str = METHOD) -> float:
    """Average quality difference of test against anchor at equal rate, in the quality's unit (dB
    for PSNR; positive: the test codec is better). Raises ``BDUnavailable`` when not computable."""
    ra, qa = _curve(anchor_rate, anchor_quality, method, "the anchor curve")
    rt, qt = _curve(test_rate, test_quality, method, "the test curve")
    _overlap(ra, rt, "rate")
    return _delta(np.log10(ra), qa, np.log10(rt), qt, method)


def common_range(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """The interval two curves share along one axis, or None."""
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    return (lo, hi) if lo < hi and math.isfinite(lo) and math.isfinite(hi) else None
