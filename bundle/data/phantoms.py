"""Deterministic synthetic frontal chest X-ray phantoms with exact lung label maps and "disease" opacities.

The phantoms stand in for real chest X-rays wherever the project needs images with known anatomy: the
embedded demo dataset, tests and benchmarks. Each phantom is built from a seeded ``numpy.random.Generator``
as a smooth density map (soft tissue, mediastinum, heart, spine, ribs, clavicles, shoulders, abdomen,
air-filled lungs with vessel markings), passed through an exponential detector response with random
exposure, window and gamma, a slight blur and signal-dependent quantum-like noise.

Every length is a fraction of the image (rows as fractions of the height, columns of the width), so any
size works, square or not. Orientation follows the image contract: row 0 is the top of the displayed
image, column 0 the image's left (the patient's right). The lung label map is exact: 1 = lung on the
image's left, 2 = lung on the image's right, drawn from the same implicit shapes that darken the image.

Diseased phantoms add opacities from ``bundle.data.lesions`` (blurred random blobs, lobar patches and
nodules of varied size and density); it shares nothing with the ART-ASyn brush synthesis in
``bundle.synthesis``, so evaluating on these phantoms does not reward a model for learning that brush.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bundle.data.fields import smooth_noise as _smooth_noise
from bundle.data.fields import smoothstep as _smoothstep
from bundle.data.lesions import lesion_density

__all__ = ["Phantom", "make_phantom", "phantom_montage"]


@dataclass
class Phantom:
    """A synthetic chest X-ray and its ground truth.

    Attributes:
        image: (H, W) float32 in [0, 1], bright bone.
        lung: (H, W) uint8 label map: 0 background, 1 lung on the image's left, 2 lung on the image's right.
        lesion: (H, W) uint8 0/1, the pixels where a disease opacity adds a visible amount (all 0 when healthy).
    """

    image: np.ndarray
    lung: np.ndarray
    lesion: np.ndarray


def _soft_inside(f: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``f < 0`` for an implicit function ``f`` measured in image fractions."""
    return _smoothstep(0.5 - f / width)


def _band(dist: np.ndarray, half: float, soft: float) -> np.ndarray:
    """Profile of a bone band across its axis: a soft slab with brighter cortical edges."""
    t = np.abs(dist) / half
    slab = _smoothstep((1.0 - t) * half / soft + 0.5)
    cortex = np.exp(-(((t - 0.85) / 0.18) ** 2))
    return slab * (0.65 + 0.35 * cortex)


def _drop_fragments(lung_map: np.ndarray, lung_soft: np.ndarray) -> np.ndarray:
    """Keep one connected field per lung: pixel-sized slivers that sampling cuts off at the sharp
    costophrenic and cardiophrenic corners are removed from the label map (in place) and from the image."""
    labels, n = ndimage.label(lung_map > 0)
    if n <= 2:
        return lung_soft
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, np.arange(1, n + 1))
    sides = ndimage.maximum(lung_map, labels, np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool)
    for side in (1, 2):
        candidates = np.nonzero(sides == side)[0]
        if len(candidates):
            keep[1 + candidates[np.argmax(sizes[candidates])]] = True
    removed = (labels > 0) & ~keep[labels]
    lung_map[removed] = 0
    lung_soft = lung_soft.copy()
    lung_soft[ndimage.binary_dilation(removed, iterations=2) & (lung_map == 0)] = 0.0
    return lung_soft


def make_phantom(
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    diseased: bool = False,
    *,
    noise: bool = True,
    visible: float = 0.03,
) -> Phantom:
    """Make one synthetic frontal chest X-ray.

    Args:
        size: image size, an int for square images or (H, W).
        seed: seed of the ``numpy.random.Generator`` that draws every random choice; the same
            (size, seed, diseased, noise) always gives the same phantom, and the healthy and diseased
            phantoms of one seed share their anatomy.
        diseased: add opacities (consolidations, lobar patches, nodules) inside the lungs.
        noise: add quantum-like noise (off gives the clean image, e.g. for visual checks).
        visible: intensity increase (image units) from which a pixel of an opacity counts as lesion.

    Returns:
        Phantom with ``image`` (H, W) float32 in [0, 1], ``lung`` (H, W) uint8 {0, 1, 2},
        ``lesion`` (H, W) uint8 {0, 1}.
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 16 or w < 16:
        raise ValueError(f"phantom size must be at least 16 x 16 pixels, got {h} x {w}")
    rng = np.random.default_rng(seed)

    def uni(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))  # python floats keep every array float32

    px = 1.0 / min(h, w)  # one pixel, in image fractions
    edge = 1.2 * px

    # anatomical coordinates (u across, v down, both ~[0, 1]) from the pixel grid: a random similarity
    # transform gives position, size, aspect and slight rotation variation
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None] - 0.5
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :] - 0.5
    scale, aspect, angle = uni(0.87, 1.0), uni(0.93, 1.07), np.deg2rad(uni(-2.5, 2.5))
    ty, tx = uni(-0.03, 0.03), uni(-0.03, 0.03)
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    u = 0.5 + ((x - tx) * ca + (y - ty) * sa) / (scale * aspect)
    v = 0.5 + (-(x - tx) * sa + (y - ty) * ca) / scale
    left = u < 0.5  # the image's left half (patient's right)
    d = np.abs(0.5 - u)  # distance from the midline: one expression draws both sides mirrored

    # ---- body outline: neck, sloping shoulders, chest wall --------------------------------------------------
    neck, chest, shoulder_v = uni(0.15, 0.19), uni(0.41, 0.45), uni(0.02, 0.08)
    half_width = neck + (chest + 0.06 - neck) * _smoothstep((v + 0.06) / (shoulder_v + 0.1))
    half_width = half_width - 0.06 * _smoothstep((v - shoulder_v) / 0.2) - 0.03 * np.clip(v - 0.6, 0, 1)
    body = _soft_inside(d - half_width, 2 * edge)
    thickness = np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0, 1.0))

    # ---- lungs ---------------------------------------------------------------------------------------------
    cp_v, apex_v = uni(0.72, 0.8), uni(0.12, 0.18)  # costophrenic angles, apices
    lung_c = uni(0.19, 0.22)  # lung centre line, distance from the midline
    lung_a = min(uni(0.14, 0.17), chest - 0.05 - lung_c)  # half width at the base
    p = uni(2.0, 2.6)
    ell = np.abs((d - lung_c) / lung_a) ** p + np.abs((v - cp_v) / (cp_v - apex_v)) ** p - 1.0
    ell_f = ell * (lung_a / p)  # about a distance near the boundary
    # diaphragm domes: parabolas through the costophrenic angles, the patient's right (image left) higher
    dome_h = np.where(left, uni(0.1, 0.14), uni(0.08, 0.12)).astype(np.float32)
    peak_d = lung_c - uni(0.0, 0.04)
    lateral = lung_c + lung_a
    dome_v = cp_v - dome_h + dome_h * ((d - peak_d) / (lateral - peak_d)) ** 2
    below_dome = v - dome_v  # > 0 under the diaphragm
    # mediastinum; heart tilted down to the image right (patient's left); aortic knob
    med_half = uni(0.05, 0.065) + 0.02 * _smoothstep((v - 0.15) / 0.3)
    hu, hv, hru, hrv = 0.5 + uni(0.05, 0.075), uni(0.63, 0.68), uni(0.13, 0.16), uni(0.09, 0.11)
    tilt = np.deg2rad(uni(20, 35))
    hx = (u - hu) * float(np.cos(tilt)) + (v - hv) * float(np.sin(tilt))
    hy = -(u - hu) * float(np.sin(tilt)) + (v - hv) * float(np.cos(tilt))
    heart_f = (np.sqrt((hx / hru) ** 2 + (hy / hrv) ** 2) - 1.0) * hrv
    ku, kv, kr = 0.5 + uni(0.05, 0.065), uni(0.3, 0.35), uni(0.025, 0.035)
    knob_f = np.sqrt((u - ku) ** 2 + (v - kv) ** 2) - kr
    medi_f = np.minimum(np.minimum(d - med_half, heart_f), knob_f)  # < 0 inside the mediastinal shadow

    lung_f = np.maximum(np.maximum(ell_f, below_dome), -medi_f)
    lung_soft = _soft_inside(lung_f, edge)
    lung_map = np.where(lung_f < 0, np.where(left, 1, 2), 0).astype(np.uint8)
    lung_soft = _drop_fragments(lung_map, lung_soft)
    # air depth: deepest in the middle of each lung, thinner towards the walls, apex and domes
    depth = np.clip(-ell, 0, 1) ** 0.5 * _smoothstep(-below_dome / 0.1) * _smoothstep(-medi_f / 0.05)
    air = lung_soft * (0.46 + 0.3 * depth)

    # ---- soft tissue, abdomen, mediastinum -----------------------------------------------------------------
    density = body * (0.38 + 0.27 * np.sqrt(thickness)) * (1.0 + 0.04 * _smooth_noise(rng, (h, w), 5))
    abdomen = body * _soft_inside(-below_dome, 3 * edge) * _soft_inside(d - lateral - 0.02, 0.05)
    density += 0.3 * abdomen
    # gastric bubble under the left hemidiaphragm (image right), kept apart from the lung by the diaphragm
    gas_v = cp_v - 0.02 + uni(0.0, 0.05)
    gas = np.exp(-(((u - 0.5 - lung_c) / 0.06) ** 2 + ((v - gas_v) / 0.035) ** 2)) * ~left
    density -= uni(0.05, 0.22) * gas * abdomen * _smoothstep((v - dome_v) / 0.03)
    above_dome = _soft_inside(below_dome, 3 * edge)  # the heart and mediastinum sit on the diaphragm
    density += 0.35 * _soft_inside(medi_f, 2 * edge) * _smoothstep((v + 0.05) / 0.25) * above_dome
    density += 0.06 * _soft_inside(heart_f, 3 * edge) * above_dome
    trachea = _soft_inside(np.abs(u - 0.5) - uni(0.014, 0.02), 2 * edge) * _soft_inside(v - uni(0.3, 0.36), 0.04)
    density -= 0.12 * trachea

    # ---- lungs: air, hila and vessel markings fanning out from them ----------------------------------------
    density -= air
    hilum_v = uni(0.4, 0.46)
    dh, dv = d - 0.09, v - hilum_v
    r_hilum = np.sqrt(dh**2 + dv**2)
    bend = 0.3 * _smooth_noise(rng, (h, w), 10)
    theta = np.arctan2(dv, dh) + bend
    spokes = rng.standard_normal(160).astype(np.float32)
    streak = np.interp(theta, np.linspace(-np.pi, np.pi, 160), spokes).astype(np.float32)
    # thin lines at the zero crossings, tapering (in angle) away from the hilum as real vessels do
    taper = np.clip(0.06 / (r_hilum + 0.02), 0.25, 1.2)
    streak = np.clip(1.0 - np.abs(streak) / (0.45 * taper), 0, 1) ** 2
    breaks = _smoothstep(_smooth_noise(rng, (h, w), 14) + 0.6)
    vessels = streak * breaks * np.exp(-r_hilum / 0.14) * _smoothstep((r_hilum - 0.02) / 0.05)
    hila = np.exp(-((r_hilum / 0.05) ** 2)) * (1 + 0.3 * _smooth_noise(rng, (h, w), 30))
    density += lung_soft * (0.4 * vessels + 0.2 * hila + 0.03 * _smooth_noise(rng, (h, w), 40))

    # ---- bones ---------------------------------------------------------------------------------------------
    bone = np.zeros((h, w), np.float32)
    # spine: vertebral bodies with darker discs
    spine_w = uni(0.028, 0.036)
    period, phase = uni(0.055, 0.065), uni(0, 1)
    discs = 0.7 + 0.3 * np.cos(np.pi * (v / period + phase)) ** 2
    bone += 0.22 * _band(u - 0.5, spine_w, 2 * edge) * discs
    # ribs: posterior arcs from the spine, anterior arcs from the chest wall down towards the sternum
    first_rib, rib_step, rib_half = uni(0.08, 0.12), uni(0.058, 0.066), uni(0.009, 0.012)
    wall = np.clip(half_width - 0.02, 0.05, None)
    inside_wall = _smoothstep((wall - d) / 0.03) * _smoothstep((d - spine_w) / 0.02)
    dd = np.clip(d - spine_w, 0, None)
    ant_slope = uni(0.35, 0.5)
    fade = _smoothstep((d - 0.1) / 0.1)
    v_lo, v_hi = v.min(axis=1), v.max(axis=1)

    def rows(lo: float, hi: float) -> slice:
        """Rows where v reaches [lo, hi]: each rib is drawn only on the band of rows it can cross."""
        hit = np.nonzero((v_hi >= lo) & (v_lo <= hi))[0]
        return slice(int(hit[0]), int(hit[-1]) + 1) if len(hit) else slice(0, 0)

    for i in range(10):
        vi = first_rib + i * rib_step + uni(-0.006, 0.006)
        half = rib_half * (1 + 0.4 * i / 9)
        r = rows(vi - 0.02 - 2 * half, vi + 0.14 + 2 * half)
        curve = vi - 0.2 * dd[r] + 1.1 * dd[r] ** 2  # rises briefly from the spine, curves down at the wall
        bone[r] += 0.16 * _band(v[r] - curve, half, edge) * inside_wall[r]
        if i < 7:
            r = rows(vi + 0.1 - 3 * half, vi + 0.12 + ant_slope * 0.5 + 3 * half)
            ant = vi + 0.12 + ant_slope * (wall[r] - d[r])
            bone[r] += 0.07 * _band(v[r] - ant, 1.3 * half, edge) * inside_wall[r] * fade[r]
    # clavicles: from the sternal end up and out to the shoulder, slightly S-shaped
    clav = uni(0.17, 0.22) - 0.32 * (d - 0.04) + 0.5 * (d - 0.04) ** 2
    clav_ends = _smoothstep((d - 0.03) / 0.02) * _smoothstep((chest - 0.04 - d) / 0.03)
    bone += 0.3 * _band(v - clav, uni(0.012, 0.016), edge) * clav_ends
    # humeral heads in the top corners, scapular edges over the lateral lungs
    hum = np.sqrt(((d - chest - 0.02) / 0.06) ** 2 + ((v - shoulder_v - 0.06) / 0.07) ** 2) - 1.0
    bone += 0.3 * _soft_inside(hum * 0.06, 2 * edge) * (0.7 + 0.3 * _smoothstep(-hum / 0.3))
    scap = d - (chest - 0.08 - 0.1 * np.clip(v - 0.2, 0, 0.3))
    bone += 0.05 * _soft_inside(-scap, 4 * edge) * _soft_inside(v - 0.5, 0.1) * _smoothstep((v - 0.12) / 0.05)
    # bones show more over the lungs (less soft tissue around them)
    density += bone * (0.7 + 0.4 * lung_soft) * body

    # ---- disease -------------------------------------------------------------------------------------------
    lesion_rng = np.random.default_rng([seed, 11])  # the disease draws from its own stream
    opacity = lesion_density(lesion_rng, lung_map, lung_soft, u, v, d, left, px) if diseased else None

    # ---- detector: exponential response, window, gamma, blur, noise ----------------------------------------
    gain, black, white, gamma = uni(1.3, 1.8), uni(0.0, 0.05), uni(0.9, 1.02), uni(0.8, 1.25)
    blur = max(0.5, 0.6 * min(h, w) / 256)
    top = 1.0 - float(np.exp(-gain * 2.0))

    def expose(dens: np.ndarray) -> np.ndarray:
        img = (1.0 - np.exp(-gain * np.clip(dens, 0, None))) / top
        img = np.clip((img - black) / (white - black), 0, 1) ** gamma
        return ndimage.gaussian_filter(img, blur, truncate=3.0)

    image = expose(density)
    lesion = np.zeros((h, w), np.uint8)
    if opacity is not None:
        sick = expose(density + opacity)
        lesion = ((sick - image >= visible) & (lung_map > 0)).astype(np.uint8)
        image = sick
    if noise:
        sigma = uni(0.008, 0.02)
        grain = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 0.5 * blur)
        image = image + sigma / (grain.std() + 1e-6) * np.sqrt(0.2 + image) * grain
    return Phantom(image=np.clip(image, 0.0, 1.0).astype(np.float32), lung=lung_map, lesion=lesion)


def phantom_montage(n: int = 4, size: int = 256, seed: int = 0) -> np.ndarray:
    """A picture of ``n`` healthy and ``n`` diseased phantoms, for documentation and visual checks.

    Rows: healthy phantoms; the same healthy phantoms with their lung labels tinted (1 red, 2 blue);
    diseased phantoms; the diseased phantoms with lesion outlines in yellow.

    Returns:
        (4 * size, n * size, 3) uint8 RGB array.
    """
    healthy = [make_phantom(size, seed=seed + i) for i in range(n)]
    diseased = [make_phantom(size, seed=seed + 1000 + i, diseased=True) for i in range(n)]

    def gray(p: Phantom) -> np.ndarray:
        return np.repeat(p.image[..., None], 3, axis=-1)

    def lungs(p: Phantom) -> np.ndarray:
        rgb = gray(p)
        rgb[p.lung == 1] = 0.6 * rgb[p.lung == 1] + 0.4 * np.array([1.0, 0.2, 0.2])
        rgb[p.lung == 2] = 0.6 * rgb[p.lung == 2] + 0.4 * np.array([0.2, 0.4, 1.0])
        return rgb

    def outline(p: Phantom) -> np.ndarray:
        rgb = gray(p)
        ring = p.lesion.astype(bool) & ~ndimage.binary_erosion(p.lesion.astype(bool), iterations=max(1, size // 256))
        rgb[ring] = (1.0, 0.9, 0.1)
        return rgb

    rows = [np.concatenate([f(p) for p in group], axis=1) for f, group in
            ((gray, healthy), (lungs, healthy), (gray, diseased), (outline, diseased))]
    return np.rint(np.concatenate(rows, axis=0) * 255).astype(np.uint8)


def _save_montage(output: str = "docs/images/demo_phantoms.png", n: int = 4, size: int = 256, seed: int = 0) -> str:
    """Command line: ``python -m bundle.data.phantoms --output docs/images/demo_phantoms.png``."""
    from PIL import Image

    from bundle.io import atomic_write

    with atomic_write(output) as tmp:
        Image.fromarray(phantom_montage(n, size, seed)).save(tmp, format="PNG", optimize=True)
    return output


if __name__ == "__main__":
    import fire

    fire.Fire(_save_montage)
