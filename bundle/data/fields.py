"""Smooth random fields shared by the phantom anatomy (``phantoms``) and the disease generator (``lesions``)."""

from __future__ import annotations

import numpy as np

__all__ = ["smoothstep", "smooth_noise"]


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Cubic ease from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bspline_taps(n_out: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (4, n_out) and cubic B-spline weights (4, n_out) sampling ``n_cells + 3`` knots at pixel centres."""
    t = 1.0 + (np.arange(n_out) + 0.5) * (n_cells / n_out)
    base = np.floor(t).astype(np.intp) - 1
    idx = base[None, :] + np.arange(4)[:, None]
    x = np.abs(t[None, :] - idx)
    wts = np.where(x < 1, 2 / 3 - x**2 + x**3 / 2, np.where(x < 2, (2 - x) ** 3 / 6, 0.0))
    return idx, wts.astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise, zero mean and unit variance, with about ``cells`` features across the shorter side.

    Random knots on a coarse grid blended by a separable cubic B-spline (four taps per axis), so the cost
    is a few passes over the image and the texture scale does not depend on the image size.
    """
    h, w = shape
    ch = max(2, int(round(cells * h / min(h, w))))
    cw = max(2, int(round(cells * w / min(h, w))))
    coarse = rng.standard_normal((ch + 3, cw + 3)).astype(np.float32)
    ri, rw = _bspline_taps(h, ch)
    ci, cwt = _bspline_taps(w, cw)
    rows = sum(rw[k][:, None] * coarse[ri[k]] for k in range(4))  # (h, cw + 3)
    out = sum(cwt[k][None, :] * rows[:, ci[k]] for k in range(4))  # (h, w)
    return (out - out.mean()) / (out.std() + 1e-6)
