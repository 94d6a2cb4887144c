"""Brush textures: the procedural brush's look in numbers, the 8-bit stamp tone curve, stamping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bundle.synthesis.brush import (
    BRUSH_SHAPE,
    StampBank,
    procedural_brush,
    quantization_tone,
)


def streak_angle(tex: np.ndarray) -> float:
    """Dominant direction of the texture's structures, degrees rising to the right (structure tensor)."""
    t = ndi.gaussian_filter(tex.astype(np.float64), 1.0)
    gy, gx = ndi.sobel(t, 0), ndi.sobel(t, 1)
    jxx, jyy, jxy = (ndi.gaussian_filter(g, 3.0).sum() for g in (gx * gx, gy * gy, gx * gy))
    gradient = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))  # rows point down
    direction = (gradient + 90.0) % 180.0  # measured clockwise on screen
    return float(180.0 - direction if direction > 90.0 else -direction)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procedural_brush_statistics(seed):
    """Mean, coverage above a few levels and streak direction of the published texture (ALGORITHM.md section 2:
    168x106 px, mean 0.06, mostly black, a small saturated core, streaks rising slightly to the right)."""
    tex = procedural_brush(seed=seed)
    assert tex.shape == BRUSH_SHAPE == (106, 168) and tex.dtype == np.float32
    assert tex.max() == pytest.approx(1.0) and tex.min() >= 0.0
    assert tex.mean() == pytest.approx(0.06, abs=0.006)
    coverage = {level: float((tex > level).mean()) for level in (0.05, 0.2, 0.6)}
    assert 0.2 <= coverage[0.05] <= 0.36  # a broad faint haze
    assert 0.06 <= coverage[0.2] <= 0.13
    assert 0.004 <= coverage[0.6] <= 0.03  # a small bright core, not a flat blob
    assert np.all(tex[0] == 0) and np.all(tex[-1] == 0) and np.all(tex[:, 0] == 0) and np.all(tex[:, -1] == 0)
    assert 2.0 <= streak_angle(tex) <= 25.0  # the published texture's: 8.5 degrees


def test_procedural_brush_is_a_fixed_asset_per_seed():
    np.testing.assert_array_equal(procedural_brush(seed=3), procedural_brush(seed=3))
    assert not np.array_equal(procedural_brush(seed=3), procedural_brush(seed=4))
    with pytest.raises(ValueError, match="mean"):
        procedural_brush(mean=0.8)


def test_quantization_tone():
    tone = quantization_tone((0.07, 0.3), (0.67, 1.0), 255)
    assert tone[0] == 0 and np.all(np.diff(tone) >= 0)
    # a texel below 1 / (255 * max opacity) never survives the published int() truncation
    assert tone[int(255 / (255 * 0.3))] == 0
    # log-space stamping with the tone deposits, on average, the published truncated a * t
    q = (np.arange(64) + 0.5) / 64
    a = ((0.07 + q[:, None] * 0.23) * (0.67 + q[None, :] * 0.33)).ravel()
    for level in (13, 64, 200):
        published = np.floor(level * a).mean() / 255
        ours = (1 - (1 - a) ** tone[level]).mean()
        assert ours == pytest.approx(published, rel=0.01)
    exact = quantization_tone((0.07, 0.3), (0.67, 1.0), 0)
    assert (1 - (1 - a) ** exact[128]).mean() == pytest.approx(a.mean() * 128 / 255, rel=0.01)


def test_stamp_bank_paint_is_order_free_over():
    tex = procedural_brush()
    bank = StampBank(tex, (30.0,), (1.0,), 4, tone=quantization_tone((0.07, 0.3), (0.67, 1.0), 0))
    rows, cols = np.array([20, 24, 40]), np.array([20, 30, 35])
    variant, opacity = np.array([0, 1, 2]), np.array([0.3, 0.2, 0.1])
    one = bank.paint((64, 64), rows, cols, variant, opacity)
    other = bank.paint((64, 64), rows[::-1], cols[::-1], variant[::-1], opacity[::-1])
    np.testing.assert_allclose(one, other, atol=1e-6)
    assert 0 < one.max() < 1
