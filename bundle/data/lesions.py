"""Synthetic "disease" opacities for the diseased phantoms (demo test set, tests, benchmarks).

The generator is deliberately independent of the ART-ASyn brush synthesis in ``bundle.synthesis``: it
shares no code, shape or texture with it, so evaluating on diseased phantoms does not reward a model for
having learned the training brush. Never tune it toward the synthesis.
"""

from __future__ import annotations

import numpy as np

from bundle.data.fields import smooth_noise as _smooth_noise
from bundle.data.fields import smoothstep as _smoothstep

__all__ = ["lesion_density"]


def lesion_density(
    rng: np.random.Generator,
    lung_map: np.ndarray,
    lung_soft: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    d: np.ndarray,
    left: np.ndarray,
    px: float,
) -> np.ndarray:
    """Density added by disease: consolidations (blurred random blobs), lobar patches and nodules.

    Returns an (H, W) float32 density map, zero outside the lungs; at least one opacity is always drawn.
    """
    h, w = lung_map.shape
    opacity = np.zeros((h, w), np.float32)
    rows, cols = np.nonzero(lung_map)
    if len(rows) == 0:
        return opacity

    def random_lung_point() -> tuple[float, float]:
        k = rng.integers(len(rows))
        return float(u[rows[k], cols[k]]), float(v[rows[k], cols[k]])

    n_blobs = int(rng.integers(0, 3))
    n_lobar = int(rng.random() < 0.35)
    n_nodules = int(rng.choice([0, 0, 1, 2, 3]))
    if n_blobs + n_lobar + n_nodules == 0:
        n_blobs = 1
    texture = 1.0 + 0.35 * _smooth_noise(rng, (h, w), 14)

    for _ in range(n_blobs):
        # a cluster of Gaussian lobules around a lung point, thresholded softly into an irregular patch
        cu, cv = random_lung_point()
        radius = rng.uniform(0.03, 0.09)
        field = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(3, 8))):
            ou, ov = rng.normal(0, 0.6 * radius, size=2)
            s = radius * rng.uniform(0.4, 0.9)
            field += np.exp(-(((u - cu - ou) ** 2 + (v - cv - ov) ** 2) / (2 * s * s)))
        patch = _smoothstep((field * texture - 0.35) / rng.uniform(0.2, 0.6))
        opacity += rng.uniform(0.15, 0.5) * patch
    for _ in range(n_lobar):
        # a lower- or upper-zone patch of one lung bounded by an oblique fissure-like line
        side = 1.0 if rng.random() < 0.5 else -1.0
        cut = rng.uniform(0.45, 0.65) + rng.uniform(-0.3, 0.3) * (d - 0.2)
        zone = (v - cut) if rng.random() < 0.7 else (cut - 0.1 - v)
        patch = _smoothstep(zone / rng.uniform(0.03, 0.1)) * (left if side > 0 else ~left)
        opacity += rng.uniform(0.15, 0.4) * patch * np.clip(texture, 0.3, None)
    for _ in range(n_nodules):
        cu, cv = random_lung_point()
        r = max(rng.uniform(0.008, 0.03), 2 * px)
        dist = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
        opacity += rng.uniform(0.15, 0.45) * _smoothstep((r - dist) / (0.6 * r) + 0.5)
    return (opacity * lung_soft).astype(np.float32)
