"""Statistics of synthetic anomalies (bundle/synthesis/statistics.py), pinned on fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bundle.synthesis.transforms import RandTextureAnomaly
from tests.synthesis_inputs import cxr_like, ellipse_lungs


def pinned_inputs(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A CXR-like image with dark lungs (softened edges) and its lung map, varied by ``k``."""
    lung = ellipse_lungs(size, (0.5, 0.3 - 0.02 * k, 0.3, 0.12), (0.5, 0.7, 0.32 - 0.03 * k, 0.13))
    dark = ndi.gaussian_filter((lung > 0).astype(np.float32), size / 64)
    return (cxr_like(size, k) * (1 - 0.55 * dark)).astype(np.float32), lung


# statistics of 160 draws (seeds 0..159) on fixed inputs at 128 px, pinned from this implementation when it was
# matched to the published code (benchmarks/bench_synthesis.py: every statistic within 4 % of the published
# one). Other seed sets of 160 draws give q10 within 10 % and the rest within 7 % of these, so a faster
# implementation that draws differently still passes, while a drift of the distribution does not.
PINNED = {
    "area_q10": 0.225,
    "area_median": 0.619,
    "area_q90": 1.041,
    "mean_in_mask": 0.259,
    "per_lung_pixel": 0.179,
    "outside_share": 0.046,
    "pieces_median": 2.0,
}


def test_statistics_pinned_on_fixed_seeds():
    from bundle.synthesis.statistics import anomaly_statistics, summarize_statistics

    inputs = [pinned_inputs(128, k) for k in range(4)]
    synth = RandTextureAnomaly()
    per = []
    for k in range(160):
        image, lung = inputs[k % 4]
        synth.set_random_state(k)
        out, mask = synth(image[None], lung[None])
        per.append(anomaly_statistics(image, out[0], mask[0], lung))
    got = summarize_statistics(per)
    print({k: round(v, 4) for k, v in got.items()})
    assert got["area_q10"] == pytest.approx(PINNED["area_q10"], rel=0.12)
    for key in ("area_median", "area_q90", "mean_in_mask", "per_lung_pixel"):
        assert got[key] == pytest.approx(PINNED[key], rel=0.08), key
    assert got["outside_share"] == pytest.approx(PINNED["outside_share"], abs=0.01)
    assert abs(got["pieces_median"] - PINNED["pieces_median"]) <= 1
    assert got["empty"] == 0
