"""The texture anomaly algorithm (bundle/synthesis/texture.py): properties of synthesize_texture_anomaly on random,
realistic and larger inputs, the soft lung mask, and fidelity to the published code (ALGORITHM.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from bundle.synthesis.texture import (
    TextureAnomalyParams,
    lung_margin,
    soft_lung_mask,
    synthesize_texture_anomaly,
)
from tests.synthesis_inputs import SIZE, check_properties, cxr_like, ellipse_lungs

lung_spec = (
    st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.floats(0.02, 0.6), st.floats(0.02, 0.6)) | st.none()
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    left=lung_spec,
    right=lung_spec,
    img_seed=st.integers(0, 1000),
    level=st.sampled_from(["cxr", "black", "white", "noise"]),
)
def test_properties_random_lungs_and_images(seed, left, right, img_seed, level):
    lung = ellipse_lungs(SIZE, left, right)
    image = {
        "cxr": cxr_like(SIZE, img_seed),
        "black": np.zeros((SIZE, SIZE), np.float32),
        "white": np.ones((SIZE, SIZE), np.float32),
        "noise": np.random.RandomState(img_seed).rand(SIZE, SIZE).astype(np.float32),
    }[level]
    out, mask, info = synthesize_texture_anomaly(image, lung, np.random.RandomState(seed))
    check_properties(image, lung, out, mask)
    if not lung.any():
        assert not mask.any() and info["reason"] == "no lung" and (out == image).all()
    assert info["anomaly"] == bool(mask.any())


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.tuples(st.floats(0.3, 0.7), st.floats(0.3, 0.7)),
    half=st.tuples(st.floats(0.2, 0.3), st.floats(0.2, 0.3)),
    widths=st.tuples(st.floats(0.09, 0.15), st.floats(0.09, 0.15)),
    one_lung=st.booleans(),
)
def test_mask_never_empty_for_realistic_lungs(seed, rows, half, widths, one_lung):
    left = (rows[0], 0.28, half[0], widths[0])
    right = None if one_lung else (rows[1], 0.72, half[1], widths[1])
    lung = ellipse_lungs(SIZE, left, right)
    for label in (1, 2):
        assert label == 2 and one_lung or (lung == label).mean() >= 0.03
    out, mask, info = synthesize_texture_anomaly(cxr_like(SIZE), lung, np.random.RandomState(seed))
    assert mask.any() and info["anomaly"] and info["area"] > 0


@pytest.mark.parametrize("kind", ["pa", "ap", "child"])
def test_properties_on_realistic_phantoms(kind):
    """The phantoms of every kind (breast shadows, collimation, markers, rotation): a non-empty anomaly inside the
    lungs' reach, lighten-only, and nearly all of the brightening in the mask (the benchmark's share outside it)."""
    from bundle.data.phantoms import make_phantom
    from bundle.synthesis.statistics import anomaly_statistics

    for seed in range(3):
        ph = make_phantom(96, seed=seed, kind=kind)
        out, mask, info = synthesize_texture_anomaly(ph.image, ph.lung, np.random.RandomState(seed))
        check_properties(ph.image, ph.lung, out, mask)
        assert mask.any() and info["anomaly"]
        stats = anomaly_statistics(ph.image, out, mask, ph.lung)
        assert stats["mean_in_mask"] > 0.05 and stats["outside_share"] < 0.15


def test_stroke_counts_never_all_zero_and_bounded():
    # only zero counts possible except one value: the redraw must still terminate with strokes
    params = TextureAnomalyParams(stroke_counts=(0, 1), zero_stroke_prob=0.99)
    for seed in range(5):
        _, _, info = synthesize_texture_anomaly(
            cxr_like(SIZE), ellipse_lungs(SIZE), np.random.RandomState(seed), params
        )
        assert info["strokes"] >= 1


def test_soft_mask_support_and_scaling():
    lung = ellipse_lungs(128)
    soft = soft_lung_mask(lung)
    m = lung_margin(lung.shape)
    assert abs(m - 9) <= 1
    reach = ndi.maximum_filter(lung, size=2 * m + 1) > 0
    assert soft.max() <= 1.0 + 1e-6 and soft[lung > 0].min() > 0.5 and not soft[~reach].any()
    assert lung_margin((256, 256)) == 18 and abs(lung_margin((1024, 1024)) - 4 * 18) <= 2


def test_larger_images_scale():
    size = 160
    img, lung = cxr_like(size), ellipse_lungs(size)
    out, mask, info = synthesize_texture_anomaly(img, lung, np.random.RandomState(0))
    check_properties(img, lung, out, mask)
    assert mask.any()


# ---- fidelity to the published code (ALGORITHM.md section 2) ----------------------------------------------


def test_stamp_count_law():
    """Stamps per stroke: min(100, max(1, int(length / spacing))), spacing = max(1, int(0.05 * width))."""
    from bundle.synthesis.texture import stamp_counts

    lengths = np.array([0.0, 3.9, 4.0, 7.99, 50.0, 399.0, 401.0, 1000.0])
    np.testing.assert_array_equal(stamp_counts(lengths, 80.0), [1, 1, 1, 1, 12, 99, 100, 100])  # spacing 4 px
    np.testing.assert_array_equal(stamp_counts(lengths, 50.0), [1, 1, 2, 3, 25, 100, 100, 100])  # spacing int(2.5) = 2
    np.testing.assert_array_equal(stamp_counts(lengths, 10.0), [1, 3, 4, 7, 50, 100, 100, 100])  # spacing max(1, 0) = 1
    np.testing.assert_array_equal(stamp_counts(lengths, 160.0), [1, 1, 1, 1, 6, 49, 50, 100])  # 512 px: spacing 8


def test_stamps_at_distinct_curve_samples():
    from bundle.synthesis.texture import DEFAULT_PARAMS, _stamp_points, stamp_counts

    t = np.linspace(0, 1, DEFAULT_PARAMS.curve_samples)[:, None]
    lengths = np.array([10.0, 120.0, 200.0, 900.0])
    curves = np.stack([np.hstack([t * 0 + k, t * L]) for k, L in enumerate(lengths)])  # straight, distinct points
    for width in DEFAULT_PARAMS.brush_widths:
        pts, per = _stamp_points(curves, lengths, width, DEFAULT_PARAMS, np.random.RandomState(0))
        np.testing.assert_array_equal(per, stamp_counts(lengths, width))
        assert len(pts) == per.sum()
        for k in range(len(lengths)):
            mine = pts[pts[:, 0] == k]
            assert len(mine) == per[k] and len(np.unique(mine[:, 1])) == per[k], "a curve sample was stamped twice"


def test_stroke_alpha_scales_a_after_b_c_d():
    """The 0.4 factor scales the stamped layer A in the composite; B (its blur) is made from unscaled A."""
    from dataclasses import replace

    from bundle.synthesis.texture import DEFAULT_PARAMS, _effects, _smooth

    assert (DEFAULT_PARAMS.stroke_alpha, DEFAULT_PARAMS.blur_alpha) == (0.4, 1.0)
    a = np.zeros((96, 96), np.float32)
    a[30:60, 20:70] = 0.6
    exact = replace(DEFAULT_PARAMS, alpha_levels=0)
    alpha, colour = _effects(a, 1.0, 50, replace(exact, composite_order=""), np.random.RandomState(0))
    np.testing.assert_allclose(alpha, 0.4 * a, atol=1e-6)
    alpha, _ = _effects(a, 1.0, 50, replace(exact, composite_order="B"), np.random.RandomState(0))
    b = _smooth(a, exact.blur_radius)
    np.testing.assert_allclose(alpha, 1 - (1 - 0.4 * a) * (1 - b), atol=1e-5)
    assert alpha[45, 45] > 0.4 * 0.6 + 0.5 * b[45, 45], "B must be composited at full strength"
    # B, C, D fade to black where A has no paint: the colour falls off outside the painted square
    _, colour = _effects(a, 1.0, 50, DEFAULT_PARAMS, np.random.RandomState(0))
    assert colour[45, 45] > 0.95 and colour[45, 12] < 0.5
