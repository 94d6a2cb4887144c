"""Synthetic chest X-ray phantoms: determinism, contract (shapes, dtypes, ranges), anatomy, lesions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bundle.data.phantoms import make_phantom, phantom_montage


def test_same_seed_identical_different_seed_differs():
    a, b = make_phantom(128, seed=3, diseased=True), make_phantom(128, seed=3, diseased=True)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.lung, b.lung)
    np.testing.assert_array_equal(a.lesion, b.lesion)
    c = make_phantom(128, seed=4, diseased=True)
    assert np.abs(a.image - c.image).mean() > 0.01
    assert not np.array_equal(a.lung, c.lung)
    assert not np.array_equal(a.lesion, c.lesion)


@pytest.mark.parametrize("size", [128, 256, 512, (160, 224), (240, 176)])
def test_contract_and_anatomy(size, phantom):
    p = phantom(size, seed=1)
    shape = (size, size) if isinstance(size, int) else size
    assert p.image.shape == p.lung.shape == p.lesion.shape == shape
    assert p.image.dtype == np.float32 and p.lung.dtype == np.uint8 and p.lesion.dtype == np.uint8
    assert 0.0 <= p.image.min() and p.image.max() <= 1.0 and p.image.std() > 0.15
    assert set(np.unique(p.lung)) == {0, 1, 2}
    assert not p.lesion.any()  # healthy
    h, w = shape
    cols = np.arange(w)[None, :]
    for label in (1, 2):
        lung = p.lung == label
        assert 0.03 < lung.mean() < 0.15, (label, lung.mean())
        assert ndimage.label(lung)[1] == 1  # one connected field per lung
        rows_, cols_ = np.nonzero(lung)
        assert np.ptp(rows_) > np.ptp(cols_) * h / w  # taller than wide, in image fractions
    # label 1 on the image's left (column 0 side), label 2 on the right
    assert np.mean(np.broadcast_to(cols, shape)[p.lung == 1]) < w / 2 < np.mean(np.broadcast_to(cols, shape)[p.lung == 2])


def test_anatomy_over_many_seeds():
    """Every seed gives two single, lung-sized fields on the right sides (small clean images: cheap)."""
    for seed in range(40):
        p = make_phantom((72, 64), seed=seed, noise=False)
        cols = np.broadcast_to(np.arange(64)[None, :], p.lung.shape)
        for label in (1, 2):
            lung = p.lung == label
            assert 0.03 < lung.mean() < 0.15 and ndimage.label(lung)[1] == 1, (seed, label)
        assert cols[p.lung == 1].max() < 32 <= cols[p.lung == 2].min(), seed


def test_lungs_darker_than_their_surroundings(phantom):
    """What an unsupervised threshold segmenter relies on; ribs still cross the lungs."""
    for seed in range(4):
        p = phantom(256, seed=seed)
        lung = p.lung > 0
        ring = ndimage.binary_dilation(lung, iterations=10) & ~lung
        assert p.image[lung].mean() + 0.05 < p.image[ring].mean()
        assert p.image[lung].std() > 0.04  # ribs, vessels, noise: not a flat hole
        # air outside the body: the darkest part of the picture, at the top corners or sides
        assert np.median(p.image[:, :3]) < p.image[lung].mean()


def test_heart_bulges_to_the_image_right(phantom):
    p = phantom(256, seed=2)
    # lung 2 (image right) loses more area to the heart than lung 1 does
    assert (p.lung == 2).sum() < (p.lung == 1).sum()


@pytest.mark.parametrize("seed", range(6))
def test_lesions_inside_lungs_and_brighter(seed, phantom):
    sick, healthy = phantom(192, seed=seed, diseased=True), phantom(192, seed=seed, diseased=False, noise=True)
    assert sick.lesion.any()
    assert set(np.unique(sick.lesion)) <= {0, 1}
    assert not (sick.lesion.astype(bool) & (sick.lung == 0)).any()
    np.testing.assert_array_equal(sick.lung, healthy.lung)  # same anatomy, disease on top
    les = sick.lesion.astype(bool)
    assert sick.image[les].mean() > healthy.image[les].mean() + 0.02


def test_clean_image_and_visible_threshold():
    clean = make_phantom(128, seed=5, diseased=True, noise=False)
    assert clean.lesion.any()
    strict = make_phantom(128, seed=5, diseased=True, noise=False, visible=0.1)
    assert strict.lesion.sum() < clean.lesion.sum()
    assert not (strict.lesion & ~clean.lesion.astype(bool)).any()


def test_large_size_and_invalid_size():
    p = make_phantom(1024, seed=0, diseased=True)
    assert p.image.shape == (1024, 1024) and 0.03 < (p.lung == 1).mean() < 0.15
    with pytest.raises(ValueError, match="at least 16"):
        make_phantom(8)


def test_montage_shape():
    m = phantom_montage(n=2, size=64)
    assert m.shape == (256, 128, 3) and m.dtype == np.uint8


def test_hard_phantom_features():
    """Realistic difficulty: lower zones brighter than upper zones; every kind; healthy and diseased share the
    film (anatomy, exposure, noise) and differ only inside the lesion's neighbourhood."""
    lower_brighter = 0
    for seed in range(12):
        p = make_phantom(128, seed=seed, noise=False)
        for label in (1, 2):
            lung = p.lung == label
            rows = np.flatnonzero(lung.any(axis=1))
            cut = np.linspace(rows[0], rows[-1] + 1, 4).astype(int)
            upper = p.image[cut[0] : cut[1]][lung[cut[0] : cut[1]]].mean()
            lower = p.image[cut[2] : cut[3]][lung[cut[2] : cut[3]]].mean()
            lower_brighter += lower > upper + 0.05
    assert lower_brighter >= 20, lower_brighter
    for kind in ("pa", "ap", "child"):
        p = make_phantom(128, seed=3, kind=kind)
        assert set(np.unique(p.lung)) == {0, 1, 2}
    assert not np.array_equal(make_phantom(128, seed=3, kind="pa").image, make_phantom(128, seed=3, kind="ap").image)
    with pytest.raises(ValueError, match="kind"):
        make_phantom(64, kind="lateral")
    h, s = make_phantom(160, seed=5), make_phantom(160, seed=5, diseased=True)
    diff = np.abs(h.image - s.image)
    near = ndimage.binary_dilation(s.lesion.astype(bool) | (s.lung > 0), iterations=8)
    assert diff[near].max() > 0.05 and diff[~near].max() < 0.02  # only the scatter veil reaches further
