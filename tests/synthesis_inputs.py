"""Shared inputs of the synthesis tests: CXR-like images, elliptical lung maps and the properties every synthetic
anomaly must have."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from bundle.synthesis.texture import lung_margin

SIZE = 64


def ellipse_lungs(size: int, left=(0.5, 0.3, 0.3, 0.12), right=(0.5, 0.7, 0.3, 0.12)) -> np.ndarray:
    """Label map with up to two elliptical lungs, each (centre row, centre col, half height, half width) as
    fractions."""
    yy, xx = np.mgrid[:size, :size] / size
    lung = np.zeros((size, size), np.uint8)
    for label, e in ((1, left), (2, right)):
        if e is not None:
            cy, cx, ry, rx = e
            lung[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = label
    return lung


def cxr_like(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.4 + 0.3 * yy + 0.1 * np.sin(xx * 30) + 0.05 * rng.rand(size, size)
    return np.clip(img, 0, 1).astype(np.float32)


def check_properties(image: np.ndarray, lung: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    assert out.shape == image.shape and mask.shape == image.shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert (out >= image).all(), "an anomaly darkened the image"
    assert set(np.unique(mask)) <= {0, 1}
    m = lung_margin(image.shape)
    reach = ndi.maximum_filter((lung > 0).astype(np.uint8), size=2 * m + 1, mode="constant")
    assert not (mask.astype(bool) & (reach == 0)).any(), "mask outside the dilated lungs"
    assert (out[mask == 0] >= image[mask == 0]).all()
