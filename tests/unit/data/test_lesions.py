"""The demo disease generator (bundle.data.lesions): every pattern draws inside the lungs, zones are covered."""

from __future__ import annotations

import numpy as np
import pytest

import bundle.data.lesions as lesions
from bundle.data.phantoms import make_phantom


def _with_kinds(monkeypatch, kinds):
    monkeypatch.setattr(lesions, "LESION_KINDS", kinds)


@pytest.mark.parametrize("kind", sorted(lesions.LESION_KINDS))
def test_each_pattern_is_visible_inside_the_lungs(kind, monkeypatch):
    _with_kinds(monkeypatch, {kind: 1.0})
    found = 0
    for seed in range(3):
        sick = make_phantom(128, seed=seed, diseased=True)
        healthy = make_phantom(128, seed=seed, diseased=False)
        les = sick.lesion.astype(bool)
        assert not (les & (sick.lung == 0)).any()
        if les.any():
            found += 1
            assert sick.image[les].mean() > healthy.image[les].mean() + 0.02
    assert found >= 2, f"{kind}: lesion visible in only {found} of 3 phantoms"


def test_effusion_at_a_base_and_air_bronchograms_in_lobar_consolidation(monkeypatch):
    _with_kinds(monkeypatch, {"effusion": 1.0})
    p = make_phantom(192, seed=4, diseased=True)
    rows = np.nonzero(p.lung)[0]
    les_rows = np.nonzero(p.lesion)[0]
    assert les_rows.min() > rows.min() + 0.5 * (rows.max() - rows.min())  # lower half of the lungs only
    # lobar consolidation: the opacity is much fainter along the bronchial tree (air bronchograms)
    _with_kinds(monkeypatch, {"lobar": 1.0})
    trees, densities = [], []
    tree_fn, lobar_fn = lesions._bronchial_tree, lesions._lobar
    monkeypatch.setattr(lesions, "_bronchial_tree", lambda *a, **k: trees.append(tree_fn(*a, **k)) or trees[-1])
    monkeypatch.setattr(lesions, "_GENERATORS", {"lobar": lambda *a: densities.append(lobar_fn(*a)) or densities[-1]})
    for seed in range(3):
        make_phantom(192, seed=seed, diseased=True)
    for tree, dens in zip(trees, densities):
        inside = dens > 0.5 * dens.max()
        on_tube = (tree > 0.9) & (dens > 0)
        assert on_tube.sum() > 20
        assert np.median(dens[on_tube]) < 0.6 * np.median(dens[inside])


def test_lower_zones_at_least_as_often_as_upper_and_unknown_kind():
    hits = np.zeros(3)
    for seed in range(40):
        p = make_phantom(96, seed=700 + seed, diseased=True)
        rows = np.nonzero(p.lung)[0]
        edges = np.linspace(rows.min(), rows.max() + 1, 4)
        les = np.nonzero(p.lesion)[0]
        hits += [bool(((les >= edges[z]) & (les < edges[z + 1])).any()) for z in range(3)]
    assert hits.min() > 0.3 * 40  # every zone is affected in a good share of the images
    assert hits[2] >= hits[0]
    rng = np.random.default_rng(0)
    z = np.zeros((8, 8))
    with pytest.raises(ValueError, match="unknown lesion kind"):
        lesions.lesion_density(rng, z.astype(np.uint8), z, z, z, z, z.astype(bool), 0.1, kinds={"tumour": 1.0})
