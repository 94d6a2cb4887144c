"""Synthetic "disease" opacities for the diseased phantoms (demo test set, tests, benchmarks).

The generator is deliberately independent of the ART-ASyn brush synthesis in ``bundle.synthesis``: it
shares no code, shape or texture with it, so evaluating on diseased phantoms does not reward a model for
having learned the training brush. Never tune it toward the synthesis (nor the synthesis toward it).

Each diseased phantom gets one to three findings drawn from a menu of radiographic patterns:

- ``lobar``: lobar consolidation, one lobe (upper, middle on the image's left = patient's right, or lower)
  filled up to its fissure, dense and nearly homogeneous, with air bronchograms (dark branching tubes);
- ``consolidation``: a rounded, irregular airspace consolidation anywhere in the lungs;
- ``patchy``: several small patchy opacities, mostly in the lower zones (bronchopneumonia);
- ``ground_glass``: a faint, wide haze through which the vessels stay visible;
- ``nodules``: one to four small round nodules;
- ``effusion``: a pleural effusion at one base, densest at the bottom, with a meniscus that rises along the
  lateral chest wall and blunts the costophrenic angle.

Positions are drawn inside the lungs over every zone; the lower zones are favoured for the patterns that
favour them in real chest films (patchy opacities, effusions, lower-lobe consolidation), so lower zones are
affected at least as often as upper ones. All sizes are fractions of the image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bundle.data.fields import smooth_noise as _smooth_noise
from bundle.data.fields import smoothstep as _smoothstep

__all__ = ["LESION_KINDS", "lesion_density"]

#: patterns and the probability that a diseased phantom shows each (at least one is always drawn)
LESION_KINDS: dict[str, float] = {
    "lobar": 0.25,
    "consolidation": 0.35,
    "patchy": 0.3,
    "ground_glass": 0.2,
    "nodules": 0.2,
    "effusion": 0.15,
}


class _Lungs:
    """Geometry of the phantom's lungs in anatomical coordinates, shared by the pattern generators."""

    def __init__(self, lung_map: np.ndarray, u: np.ndarray, v: np.ndarray, left: np.ndarray) -> None:
        self.map, self.u, self.v, self.left = lung_map, u, v, left
        self.rows, self.cols = np.nonzero(lung_map)
        self.sides = [s for s in (1, 2) if (lung_map == s).any()]
        self.extent = {}  # side -> (top v, bottom v, inner u, outer u) of that lung
        for s in self.sides:
            m = lung_map == s
            uu, vv = u[m], v[m]
            self.extent[s] = (float(vv.min()), float(vv.max()), float(uu.min()), float(uu.max()))

    def side_mask(self, side: int) -> np.ndarray:
        """The half of the image where lung ``side`` lies (1: image left, 2: image right)."""
        return self.left if side == 1 else ~self.left

    def zone(self, side: int) -> np.ndarray:
        """Relative height inside lung ``side``: 0 at its apex, 1 at its base (any pixel)."""
        top, bottom = self.extent[side][:2]
        return (self.v - top) / max(bottom - top, 1e-6)

    def point(self, rng: np.random.Generator, lower_bias: float = 0.0) -> tuple[float, float, int]:
        """A random lung point ``(u, v, side)``; ``lower_bias`` > 0 favours the lower zones."""
        weights = None
        if lower_bias > 0:
            vv = self.v[self.rows, self.cols]
            top, bottom = float(vv.min()), float(vv.max())
            weights = 1.0 + lower_bias * np.clip((vv - top) / max(bottom - top, 1e-6), 0, 1)
            weights = weights / weights.sum()
        k = int(rng.choice(len(self.rows), p=weights))
        r, c = self.rows[k], self.cols[k]
        return float(self.u[r, c]), float(self.v[r, c]), int(self.map[r, c])


def _segment_distance(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance of every pixel (in u, v units) to the segment a-b."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / max(du * du + dv * dv, 1e-12), 0.0, 1.0)
    return np.sqrt((u - a[0] - t * du) ** 2 + (v - a[1] - t * dv) ** 2)


def _bronchial_tree(rng: np.random.Generator, lungs: _Lungs, side: int, start: tuple[float, float],
                    direction: float, px: float) -> np.ndarray:
    """Dark air bronchograms: a small branching tree of tapering tubes from ``start`` along ``direction``.

    Returns an (H, W) map in [0, 1] (1 on a tube's axis).
    """
    u, v = lungs.u, lungs.v
    tubes = np.zeros(u.shape, np.float32)
    stack = [(start, direction, rng.uniform(0.07, 0.11), rng.uniform(0.006, 0.009), 0)]
    while stack:
        (pu, pv), angle, length, radius, depth = stack.pop()
        end = (pu + length * np.cos(angle), pv + length * np.sin(angle))
        radius = max(radius, 1.2 * px)
        dist = _segment_distance(u, v, (pu, pv), end)
        tubes = np.maximum(tubes, _smoothstep((radius - dist) / radius + 0.5))
        if depth < 3:
            for turn in (-1.0, 1.0):
                if rng.random() < 0.85:
                    stack.append((end, angle + turn * rng.uniform(0.25, 0.6), length * rng.uniform(0.6, 0.8),
                                  radius * 0.75, depth + 1))
    return tubes


def _lobar(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, px: float) -> np.ndarray:
    """One lobe consolidated up to its fissure, with air bronchograms."""
    side = int(rng.choice(lungs.sides))
    zone = lungs.zone(side)
    # which lobe: the image-left lung (patient's right) has a middle lobe; lower lobes are the most common
    lobes = ["lower", "upper", "middle"] if side == 1 else ["lower", "upper"]
    probs = [0.45, 0.3, 0.25] if side == 1 else [0.6, 0.4]
    lobe = str(rng.choice(lobes, p=probs))
    top, bottom, inner, outer = lungs.extent[side]
    # fissures as tilted lines in the lung's own height coordinate; the oblique one runs higher medially
    lateral = np.clip(np.abs(lungs.u - 0.5) - abs(inner - 0.5), 0, None) / max(abs(outer - inner), 1e-6)
    oblique = zone - (rng.uniform(0.35, 0.5) + 0.25 * lateral)
    horizontal = zone - rng.uniform(0.4, 0.5)
    soft = rng.uniform(0.02, 0.05)
    if lobe == "lower":
        region = _smoothstep(oblique / soft + 0.5)
    elif lobe == "upper":
        region = _smoothstep(-(horizontal if side == 1 else oblique) / soft + 0.5)
    else:
        region = _smoothstep(horizontal / soft + 0.5) * _smoothstep(-oblique / soft + 0.5)
    # partial lobar filling: the consolidation fades out towards one end of the lobe
    fade = _smoothstep((rng.uniform(0.6, 1.0) - rng.uniform(0, 1) * np.abs(zone - rng.uniform(0, 1))) / 0.3)
    region = region * lungs.side_mask(side) * fade
    density = rng.uniform(0.3, 0.55) * region * (1.0 + 0.08 * texture)
    # bronchi enter from the hilum and run down (lower lobe), up (upper) or out (middle lobe)
    hilum = (0.5 + (-1 if side == 1 else 1) * rng.uniform(0.08, 0.11), top + rng.uniform(0.42, 0.5) * (bottom - top))
    outward = 0.0 if side == 2 else np.pi
    direction = {"lower": np.pi / 2 + 0.4 * np.cos(outward), "upper": -np.pi / 2 - 0.4 * np.cos(outward),
                 "middle": outward + 0.5}[lobe] + rng.uniform(-0.25, 0.25)
    bronchi = _bronchial_tree(rng, lungs, side, hilum, direction, px)
    return density * (1.0 - rng.uniform(0.55, 0.8) * bronchi)


def _blob_cluster(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, cu: float, cv: float,
                  radius: float, lobules: int) -> np.ndarray:
    """An irregular patch: Gaussian lobules around (cu, cv), thresholded softly against a texture."""
    u, v = lungs.u, lungs.v
    field = np.zeros(u.shape, np.float32)
    for _ in range(lobules):
        ou, ov = rng.normal(0, 0.6 * radius, size=2)
        s = radius * rng.uniform(0.4, 0.9)
        field += np.exp(-(((u - cu - ou) ** 2 + (v - cv - ov) ** 2) / (2 * s * s)))
    return _smoothstep((field * (1.0 + 0.35 * texture) - 0.35) / rng.uniform(0.2, 0.6))


def _consolidation(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, px: float) -> np.ndarray:
    """A rounded, irregular airspace consolidation in any zone."""
    cu, cv, _ = lungs.point(rng)
    patch = _blob_cluster(rng, lungs, texture, cu, cv, rng.uniform(0.04, 0.09), int(rng.integers(3, 8)))
    return rng.uniform(0.2, 0.5) * patch


def _patchy(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, px: float) -> np.ndarray:
    """Several small patchy opacities, favouring the lower zones (bronchopneumonia)."""
    out = np.zeros(lungs.u.shape, np.float32)
    for _ in range(int(rng.integers(3, 8))):
        cu, cv, _ = lungs.point(rng, lower_bias=3.0)
        patch = _blob_cluster(rng, lungs, texture, cu, cv, rng.uniform(0.015, 0.035), int(rng.integers(2, 5)))
        out = np.maximum(out, rng.uniform(0.15, 0.35) * patch)
    return out


def _ground_glass(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, px: float) -> np.ndarray:
    """A faint haze with an ill-defined edge over part of a lung (sometimes both); additive, so vessels and ribs
    stay visible through it."""
    h, w = lungs.u.shape
    region = np.zeros((h, w), np.float32)
    sides = list(lungs.sides) if rng.random() < 0.3 else [int(rng.choice(lungs.sides))]  # bilateral: viral
    edge = 0.25 * _smooth_noise(rng, (h, w), 6)  # wavy, ill-defined border
    for side in sides:
        top, bottom, inner, outer = lungs.extent[side]
        cu = inner + (outer - inner) * rng.uniform(0.3, 0.7)
        cv = top + (bottom - top) * rng.uniform(0.2, 0.85)
        ru, rv = abs(outer - inner) * rng.uniform(0.35, 0.7), (bottom - top) * rng.uniform(0.2, 0.45)
        r = np.sqrt(((lungs.u - cu) / ru) ** 2 + ((lungs.v - cv) / rv) ** 2)
        region = np.maximum(region, _smoothstep((1.0 - r + edge) / 0.35) * lungs.side_mask(side))
    mottle = _smoothstep(0.5 + 0.5 * _smooth_noise(rng, (h, w), 10))
    return rng.uniform(0.12, 0.2) * region * (0.6 + 0.4 * mottle)


def _nodules(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, px: float) -> np.ndarray:
    """One to four small, round, well-defined nodules."""
    out = np.zeros(lungs.u.shape, np.float32)
    for _ in range(int(rng.integers(1, 5))):
        cu, cv, _ = lungs.point(rng)
        r = max(rng.uniform(0.01, 0.03), 2 * px)
        dist = np.sqrt((lungs.u - cu) ** 2 + (lungs.v - cv) ** 2)
        out = np.maximum(out, rng.uniform(0.25, 0.5) * _smoothstep((r - dist) / (0.6 * r) + 0.5))
    return out


def _effusion(rng: np.random.Generator, lungs: _Lungs, texture: np.ndarray, px: float) -> np.ndarray:
    """Pleural effusion at one base: a meniscus rising along the lateral wall, blunting the costophrenic angle."""
    side = int(rng.choice(lungs.sides))
    top, bottom, inner, outer = lungs.extent[side]
    height = bottom - top
    lateral = np.clip((np.abs(lungs.u - 0.5) - abs(inner - 0.5)) / max(abs(outer - inner), 1e-6), 0, 1)
    level = bottom - rng.uniform(0.15, 0.3) * height  # fluid level at the middle of the hemithorax
    surface = level - rng.uniform(0.08, 0.2) * height * lateral**2  # the meniscus climbs laterally
    depth = (lungs.v - surface) / (0.08 * height)  # fluid thickens downwards from a soft upper edge
    return rng.uniform(0.4, 0.65) * _smoothstep(depth + 0.2) * lungs.side_mask(side)


_GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "lobar": _lobar,
    "consolidation": _consolidation,
    "patchy": _patchy,
    "ground_glass": _ground_glass,
    "nodules": _nodules,
    "effusion": _effusion,
}


def lesion_density(
    rng: np.random.Generator,
    lung_map: np.ndarray,
    lung_soft: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    d: np.ndarray,
    left: np.ndarray,
    px: float,
    kinds: dict[str, float] | None = None,
) -> np.ndarray:
    """Density added by disease: one to three findings drawn from :data:`LESION_KINDS`.

    Args:
        rng: the phantom's random generator.
        lung_map: (H, W) uint8 lung labels (1 image-left lung, 2 image-right lung).
        lung_soft: (H, W) soft lung indicator in [0, 1]; the opacity is confined to it.
        u, v: (H, W) anatomical coordinates (across, down), about [0, 1].
        d: (H, W) distance from the midline, ``|0.5 - u|``.
        left: (H, W) bool, the image's left half.
        px: one pixel in image fractions (lower bound of the smallest sizes).
        kinds: pattern probabilities (default :data:`LESION_KINDS`); unknown names raise ``ValueError``.

    Returns:
        (H, W) float32 density map, zero outside the lungs; at least one finding is always drawn.
    """
    kinds = dict(LESION_KINDS if kinds is None else kinds)
    unknown = sorted(set(kinds) - set(_GENERATORS))
    if unknown:
        raise ValueError(f"unknown lesion kind(s) {unknown}; valid kinds are {sorted(_GENERATORS)}.")
    h, w = lung_map.shape
    opacity = np.zeros((h, w), np.float32)
    if not lung_map.any():
        return opacity
    lungs = _Lungs(lung_map, u, v, left)
    names = list(kinds)
    chosen = [k for k in names if rng.random() < kinds[k]]
    if not chosen:
        probs = np.array([kinds[k] for k in names], np.float64)
        chosen = [names[int(rng.choice(len(names), p=probs / probs.sum()))]]
    if len(chosen) > 3:  # at most three findings, an unbiased choice among those drawn
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), size=3, replace=False))]
    texture = _smooth_noise(rng, (h, w), 14)
    for name in chosen:
        # findings overlap as densities add (two processes in one place look denser)
        opacity += _GENERATORS[name](rng, lungs, texture, px).astype(np.float32)
    return (np.clip(opacity, 0, 0.8) * lung_soft).astype(np.float32)
