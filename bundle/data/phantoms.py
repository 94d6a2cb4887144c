"""Deterministic synthetic frontal chest X-ray phantoms with exact lung label maps and "disease" opacities.

The phantoms stand in for real chest X-rays wherever the project needs images with known anatomy: the
embedded demo dataset, tests and benchmarks. Each phantom is built from a seeded ``numpy.random.Generator``
as a smooth density map (soft tissue, mediastinum, heart, spine, ribs, clavicles, shoulders, abdomen,
air-filled lungs with hila and vessel markings), passed through an exponential detector response with random
exposure, window and gamma, a slight blur and signal-dependent quantum-like noise.

They are hard on purpose, in the ways real radiographs are hard for an unsupervised lung segmenter: the lung
fields get denser toward the bases, some adults carry breast shadows over the lower zones, the posterior
costophrenic recesses show faintly through the domes, the heart's shadow fades over the left lower lung, and
the films vary in projection (adult PA, AP portable, pediatric), collimation, burned-in side markers and
rotation (see :func:`make_phantom`).

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
from PIL import Image
from scipy import ndimage

from bundle.data.fields import smooth_noise as _smooth_noise
from bundle.data.fields import smoothstep as _smoothstep
from bundle.data.lesions import lesion_density
from bundle.io import atomic_write

__all__ = ["KINDS", "STORAGE_VARIANTS", "Phantom", "as_stored", "make_phantom", "phantom_montage"]


#: ways a pipeline may hand over a phantom's image: float, another display gamma, integer bit depths
STORAGE_VARIANTS = ("float", "gamma 0.6", "gamma 1.6", "8-bit", "12-bit", "16-bit")


def as_stored(image: np.ndarray, variant: str) -> np.ndarray:
    """The (H, W) float image in [0, 1] as stored by another pipeline (one of ``STORAGE_VARIANTS``), for
    checks that lung maps do not depend on gamma, bit depth or float storage."""
    if variant not in STORAGE_VARIANTS:
        raise ValueError(f"unknown storage variant {variant!r}; expected one of {STORAGE_VARIANTS}")
    if variant.startswith("gamma"):
        return image ** float(variant.split()[1])
    bits = {"8-bit": (255, np.uint8), "12-bit": (4095, np.uint16), "16-bit": (65535, np.uint16)}.get(variant)
    return np.rint(image * bits[0]).astype(bits[1]) if bits else image


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


#: patient/projection kinds of :func:`make_phantom`, and how often a seed draws each
KINDS = ("pa", "ap", "child")
_KIND_P = (0.45, 0.3, 0.25)

# 5 x 7 bitmaps of the burned-in side markers (row 0 at the top)
_LETTERS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def _letter(ch: str, rows: np.ndarray, cols: np.ndarray, top: float, left: float, height: float) -> np.ndarray:
    """Soft 0..1 raster of a bitmap letter ``height`` tall (image fractions) with its top-left corner at
    (top, left); rows/cols are the pixel-centre coordinates as (H, 1) and (1, W) image fractions."""
    cell = height / 7.0
    bitmap = np.array([[c == "1" for c in r] for r in _LETTERS[ch]], np.float32)
    i = np.floor((rows - top) / cell).astype(np.intp)
    j = np.floor((cols - left) / cell).astype(np.intp)
    inside = (i >= 0) & (i < 7) & (j >= 0) & (j < 5)
    return np.where(inside, bitmap[np.clip(i, 0, 6), np.clip(j, 0, 4)], 0.0).astype(np.float32)


def _low_pass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` (image fractions) computed on a copy of about 64 pixels a side and upsampled:
    the wide scatter veil of a portable film costs the same at every size."""
    h, w = img.shape
    k = max(1, min(h, w) // 64)
    small = img[: h // k * k, : w // k * k].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma * min(small.shape), mode="nearest")
    return ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1, mode="nearest")[:h, :w]


def make_phantom(
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    diseased: bool = False,
    *,
    noise: bool = True,
    visible: float = 0.03,
    kind: str | None = None,
) -> Phantom:
    """Make one synthetic frontal chest X-ray.

    The phantoms are made hard on purpose, as real radiographs are for an unsupervised lung segmenter: the lung
    fields get denser toward the bases (more soft tissue, fewer air, vessels crowding toward the hila and bases),
    some adults carry breast shadows over the lower zones, the diaphragm domes let the posterior costophrenic recess
    show faintly through them, the heart overlaps the left lower lung, and films vary in projection (PA, AP
    portable with low inspiration, a wide heart and a scatter veil, pediatric proportions with a thymus), in
    collimation (bright unexposed borders), burned-in "L"/"R" markers and slight rotation of the patient and of the
    film.

    The lung map is the lung field as a reader outlines it on a frontal film: each lung from the apex down to the
    diaphragm dome and the lateral costophrenic angle, bounded medially by the mediastinum and the heart, and
    including everything over it (ribs, breast shadow, vessels, disease). Lung hidden behind the domes and the
    heart is not labelled; pixels outside the collimated field are not labelled either.

    Args:
        size: image size, an int for square images or (H, W).
        seed: seed of the ``numpy.random.Generator`` that draws every random choice; the same
            (size, seed, diseased, noise, kind) always gives the same phantom, and the healthy and diseased
            phantoms of one seed share their anatomy, exposure and noise (only the disease differs).
        diseased: add opacities (``bundle.data.lesions``) inside the lungs.
        noise: add quantum-like noise (off gives the clean image, e.g. for visual checks).
        visible: intensity increase (image units) from which a pixel of an opacity counts as lesion.
        kind: ``"pa"`` (adult posteroanterior), ``"ap"`` (adult AP portable), ``"child"`` (pediatric, ages about
            1-5) or None to let the seed choose (45 % / 30 % / 25 %).

    Returns:
        Phantom with ``image`` (H, W) float32 in [0, 1], ``lung`` (H, W) uint8 {0, 1, 2},
        ``lesion`` (H, W) uint8 {0, 1}.
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 16 or w < 16:
        raise ValueError(f"phantom size must be at least 16 x 16 pixels, got {h} x {w}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"phantom kind must be one of {KINDS} or None, got {kind!r}")
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng([seed, 7])  # its own stream: healthy and diseased get the same grain
    drawn = str(rng.choice(KINDS, p=_KIND_P))
    kind = kind or drawn
    adult, ap, child = kind != "child", kind == "ap", kind == "child"

    def uni(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))  # python floats keep every array float32

    px = 1.0 / min(h, w)  # one pixel, in image fractions
    edge = 1.2 * px

    # anatomical coordinates (u across, v down, both ~[0, 1]) from the pixel grid: a random similarity
    # transform gives position, size, aspect and slight rotation of the film; a child's film shows more of the body
    yy = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    xx = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    y, x = yy - 0.5, xx - 0.5
    scale = uni(0.76, 0.88) if child else uni(0.86, 1.0)
    aspect, angle = uni(0.93, 1.07), np.deg2rad(uni(-4.0, 4.0))
    ty, tx = (uni(-0.07, -0.02) if child else uni(-0.03, 0.03)), uni(-0.03, 0.03)
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    u = 0.5 + ((x - tx) * ca + (y - ty) * sa) / (scale * aspect)
    v = 0.5 + (-(x - tx) * sa + (y - ty) * ca) / scale
    left = u < 0.5  # the image's left half (patient's right)
    d = np.abs(0.5 - u)  # distance from the midline: one expression draws both sides mirrored
    # patient rotation: the spine and mediastinum shift sideways against the chest wall
    mid = 0.5 + uni(-0.022, 0.022)
    dm = np.abs(u - mid)

    # ---- body outline: neck, sloping shoulders, chest wall --------------------------------------------------
    neck, chest, shoulder_v = uni(0.15, 0.19), uni(0.41, 0.45), uni(0.02, 0.08)
    half_width = neck + (chest + 0.06 - neck) * _smoothstep((v + 0.06) / (shoulder_v + 0.1))
    half_width = half_width - 0.06 * _smoothstep((v - shoulder_v) / 0.2) - 0.03 * np.clip(v - 0.6, 0, 1)
    body = _soft_inside(d - half_width, 2 * edge)
    thickness = np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0, 1.0))

    # ---- lungs ---------------------------------------------------------------------------------------------
    # costophrenic angles and apices: a portable film or a crying child has a lower inspiration
    cp_v = uni(0.72, 0.8) if kind == "pa" else uni(0.67, 0.74)
    apex_v = uni(0.12, 0.18) if kind == "pa" else uni(0.14, 0.19)
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
    # mediastinum (a child's thymus widens its upper part); heart tilted down to the image right (patient's
    # left), wider on an AP film and in a child; aortic knob
    med_half = uni(0.05, 0.065) + 0.02 * _smoothstep((v - 0.15) / 0.3)
    if child:
        med_half = med_half + uni(0.015, 0.04) * np.exp(-(((v - 0.33) / 0.09) ** 2))
    heart_big = ap or child
    hu, hv = mid + uni(0.05, 0.075), uni(0.62, 0.67) if kind == "pa" else uni(0.58, 0.63)
    hru, hrv = (uni(0.16, 0.19), uni(0.1, 0.12)) if heart_big else (uni(0.13, 0.16), uni(0.09, 0.11))
    tilt = np.deg2rad(uni(20, 35))
    hx = (u - hu) * float(np.cos(tilt)) + (v - hv) * float(np.sin(tilt))
    hy = -(u - hu) * float(np.sin(tilt)) + (v - hv) * float(np.cos(tilt))
    heart_f = (np.sqrt((hx / hru) ** 2 + (hy / hrv) ** 2) - 1.0) * hrv
    ku, kv, kr = mid + uni(0.05, 0.065), uni(0.3, 0.35), uni(0.025, 0.035)
    knob_f = np.sqrt((u - ku) ** 2 + (v - kv) ** 2) - kr
    medi_f = np.minimum(np.minimum(dm - med_half, heart_f), knob_f)  # < 0 inside the mediastinal shadow

    lung_f = np.maximum(np.maximum(ell_f, below_dome), -medi_f)
    lung_soft = _soft_inside(lung_f, edge)
    lung_map = np.where(lung_f < 0, np.where(left, 1, 2), 0).astype(np.uint8)
    lung_soft = _drop_fragments(lung_map, lung_soft)
    # air depth: deepest in the middle of each lung, thinner towards the walls, apex and domes; less air toward
    # the bases, where the lungs lie behind more soft tissue (the gradient that real lower zones show)
    zone = _smoothstep((v - apex_v) / (cp_v - apex_v))  # 0 at the apex, 1 at the costophrenic angle
    depth = np.clip(-ell, 0, 1) ** 0.5 * _smoothstep(-below_dome / 0.1) * _smoothstep(-medi_f / 0.05)
    base_loss = uni(0.4, 0.6) if kind != "pa" else uni(0.3, 0.5)
    air = lung_soft * (0.36 + 0.22 * depth) * (1.0 - base_loss * zone**1.3)

    # ---- soft tissue, abdomen, mediastinum -----------------------------------------------------------------
    density = body * (0.38 + 0.27 * np.sqrt(thickness)) * (1.0 + 0.04 * _smooth_noise(rng, (h, w), 5))
    if ap or child:
        # arms along the body (a supine or held patient), a thin dark air gap between them and the chest wall
        gap, arm_w = uni(0.008, 0.03), uni(0.05, 0.08)
        arm_f = np.abs(d - half_width - gap - arm_w) - arm_w
        arm = _soft_inside(arm_f, 2 * edge) * _smoothstep((v - shoulder_v - 0.08) / 0.08)
        arm_th = np.sqrt(np.clip(-arm_f / arm_w, 0, 1))
        density += arm * (0.25 + 0.2 * arm_th + 0.15 * _band(d - half_width - gap - arm_w, 0.3 * arm_w, 2 * edge))
    density += body * uni(0.03, 0.08) * _smoothstep((v - 0.3) / 0.5)  # the chest wall thickens toward the waist
    abdomen = body * _soft_inside(-below_dome, 3 * edge) * _soft_inside(d - lateral - 0.02, 0.05)
    density += 0.3 * abdomen
    # posterior costophrenic recesses: lung behind the domes, a faint darkening just below each dome
    recess_depth = uni(0.04, 0.08)
    recess = (abdomen * _smoothstep(1.0 - below_dome / recess_depth) * _smoothstep((lateral - d) / 0.04)
              * _smoothstep((d - peak_d + 0.08) / 0.05) * _soft_inside(medi_f * -1.0, 3 * edge))
    density -= uni(0.05, 0.1) * recess
    # gastric bubble under the left hemidiaphragm (image right), kept apart from the lung by the diaphragm
    gas_v = cp_v - 0.02 + uni(0.0, 0.05)
    gas = np.exp(-(((u - 0.5 - lung_c) / 0.06) ** 2 + ((v - gas_v) / 0.035) ** 2)) * ~left
    density -= uni(0.05, 0.22) * gas * abdomen * _smoothstep((v - dome_v) / 0.03)
    above_dome = _soft_inside(below_dome, 3 * edge)  # the heart and mediastinum sit on the diaphragm
    density += 0.35 * _soft_inside(medi_f, 2 * edge) * _smoothstep((v + 0.05) / 0.25) * above_dome
    density += 0.06 * _soft_inside(heart_f, 3 * edge) * above_dome
    # the heart is round: its shadow fades over the lung beside it rather than stopping at its silhouette
    density += uni(0.04, 0.09) * np.exp(-np.clip(heart_f, 0, None) / 0.025) * (heart_f > 0) * above_dome
    trachea = _soft_inside(np.abs(u - mid) - uni(0.014, 0.02), 2 * edge) * _soft_inside(v - uni(0.3, 0.36), 0.04)
    density -= 0.12 * trachea
    # breast shadows over the lower zones (some adults): thickest at their lower margin, fading upward
    if adult and rng.random() < 0.4:
        bc, bv, brx, bry = lung_c + uni(0.02, 0.07), cp_v - uni(0.0, 0.08), uni(0.13, 0.18), uni(0.1, 0.14)
        bv = np.where(left, bv, bv + uni(-0.02, 0.02)).astype(np.float32)
        rr = np.sqrt(((d - bc) / brx) ** 2 + ((v - bv) / bry) ** 2)
        breast = _soft_inside((rr - 1.0) * bry, 2 * edge) * np.sqrt(np.clip(1.0 - rr**2, 0, 1) + 0.05)
        breast *= _smoothstep((v - bv + 0.9 * bry) / (1.1 * bry))
        density += uni(0.12, 0.24) * breast * body

    # ---- lungs: air, hila and vessel markings fanning out from them ----------------------------------------
    density -= air
    hilum_v = uni(0.4, 0.46)
    dh, dv = dm - 0.09, v - hilum_v
    r_hilum = np.sqrt(dh**2 + dv**2)
    bend = 0.3 * _smooth_noise(rng, (h, w), 10)
    theta = np.arctan2(dv, dh) + bend
    spokes = rng.standard_normal(160).astype(np.float32)
    streak = np.interp(theta, np.linspace(-np.pi, np.pi, 160), spokes).astype(np.float32)
    # thin lines at the zero crossings, tapering (in angle) away from the hilum as real vessels do; the lower
    # lobe vessels run longer, so the markings crowd toward the bases
    taper = np.clip(0.06 / (r_hilum + 0.02), 0.25, 1.2)
    streak = np.clip(1.0 - np.abs(streak) / (0.45 * taper), 0, 1) ** 2
    breaks = _smoothstep(_smooth_noise(rng, (h, w), 14) + 0.6)
    reach = 0.13 + 0.08 * _smoothstep(dv / 0.2)
    vessels = streak * breaks * np.exp(-r_hilum / reach) * _smoothstep((r_hilum - 0.02) / 0.05)
    hilum_size = uni(0.05, 0.07)
    hila = np.exp(-((r_hilum / hilum_size) ** 2)) * (1 + 0.3 * _smooth_noise(rng, (h, w), 30))
    density += lung_soft * (0.45 * vessels + uni(0.2, 0.32) * hila + 0.03 * _smooth_noise(rng, (h, w), 40))

    # ---- bones ---------------------------------------------------------------------------------------------
    bone = np.zeros((h, w), np.float32)
    # spine: vertebral bodies with darker discs
    spine_w = uni(0.028, 0.036)
    period, phase = uni(0.055, 0.065), uni(0, 1)
    discs = 0.7 + 0.3 * np.cos(np.pi * (v / period + phase)) ** 2
    bone += 0.22 * _band(u - mid, spine_w, 2 * edge) * discs
    # ribs: posterior arcs from the spine, anterior arcs from the chest wall down towards the sternum
    first_rib, rib_step, rib_half = uni(0.08, 0.12), uni(0.058, 0.066), uni(0.009, 0.012)
    if not adult:
        rib_step *= 0.92  # a child's ribs run more horizontally and closer together
    wall = np.clip(half_width - 0.02, 0.05, None)
    inside_wall = _smoothstep((wall - d) / 0.03) * _smoothstep((dm - spine_w) / 0.02)
    dd = np.clip(dm - spine_w, 0, None)
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
    # the rib cage seen edge-on along the lateral chest wall: a bright rim just outside each lung field
    rim = np.exp(-(((d - lateral - uni(0.015, 0.03)) / 0.018) ** 2)) * _smoothstep((v - apex_v) / 0.1)
    bone += uni(0.08, 0.14) * rim * _soft_inside(below_dome - 0.02, 0.03)
    # clavicles: from the sternal end up and out to the shoulder, slightly S-shaped (higher on an AP film)
    clav = (uni(0.12, 0.17) if ap else uni(0.17, 0.22)) - 0.32 * (dm - 0.04) + 0.5 * (dm - 0.04) ** 2
    clav_ends = _smoothstep((dm - 0.03) / 0.02) * _smoothstep((chest - 0.04 - d) / 0.03)
    bone += 0.3 * _band(v - clav, uni(0.012, 0.016), edge) * clav_ends
    # humeral heads in the top corners, scapular edges over the lateral lungs (further in on an AP film)
    hum = np.sqrt(((d - chest - 0.02) / 0.06) ** 2 + ((v - shoulder_v - 0.06) / 0.07) ** 2) - 1.0
    bone += 0.3 * _soft_inside(hum * 0.06, 2 * edge) * (0.7 + 0.3 * _smoothstep(-hum / 0.3))
    scap = d - (chest - (0.12 if ap else 0.08) - 0.1 * np.clip(v - 0.2, 0, 0.3))
    bone += (0.09 if ap else 0.05) * _soft_inside(-scap, 4 * edge) * _soft_inside(v - 0.5, 0.1) * _smoothstep(
        (v - 0.12) / 0.05)
    # bones show more over the lungs (less soft tissue around them)
    density += bone * (0.7 + 0.4 * lung_soft) * body

    # ---- film: exposure, window, gamma, blur, scatter, collimation, markers (all drawn before the disease, so
    # the healthy and diseased phantoms of a seed differ in the disease only) -----------------------------------
    gain = uni(0.8, 1.2) if ap else uni(1.0, 1.5)
    black, white, gamma = uni(0.0, 0.05), uni(0.9, 1.02), uni(0.8, 1.25)
    veil = uni(0.1, 0.25) if ap else uni(0.0, 0.08)  # scatter: a portable film has no grid
    blur = max(0.5, 0.6 * min(h, w) / 256)
    top = 1.0 - float(np.exp(-gain * 2.0))
    # collimation: bright unexposed strips along some edges, slightly tilted, clear of the lungs
    shutter = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:
        c_tilt = np.deg2rad(uni(-2.0, 2.0))
        for axis, far in ((0, False), (0, True), (1, False), (1, True)):
            width = uni(0.01, 0.05) if rng.random() < 0.6 else 0.0
            if width == 0.0:
                continue
            t = (yy if axis == 0 else xx) + c_tilt * ((xx if axis == 0 else yy) - 0.5)
            shutter = np.maximum(shutter, _soft_inside((1.0 - t if far else t) - width, 2 * edge))
    shutter_level = uni(0.72, 0.95)
    # side marker: "R" on the image's left (patient's right) or "L" on the image's right, near a top corner
    marker = None
    if rng.random() < 0.7:
        mh = uni(0.035, 0.06)
        ch = "R" if rng.random() < 0.5 else "L"
        mx = uni(0.03, 0.1) if ch == "R" else 1.0 - uni(0.03, 0.1) - 5 / 7 * mh
        marker = (_letter(ch, yy, xx, uni(0.03, 0.15), mx, mh), uni(0.85, 1.0), rng.random() < 0.4)
    lesion_rng = np.random.default_rng([seed, 11])  # the disease draws from its own stream

    def expose(dens: np.ndarray) -> np.ndarray:
        img = (1.0 - np.exp(-gain * np.clip(dens, 0, None))) / top
        img = np.clip((img - black) / (white - black), 0, 1) ** gamma
        if veil > 0:
            img = (1.0 - veil) * img + veil * _low_pass(img, 0.06)
        return ndimage.gaussian_filter(img, blur, truncate=3.0)

    # ---- disease -------------------------------------------------------------------------------------------
    opacity = lesion_density(lesion_rng, lung_map, lung_soft, u, v, d, left, px) if diseased else None

    image = expose(density)
    lesion = np.zeros((h, w), np.uint8)
    if opacity is not None:
        sick = expose(density + opacity)
        lesion = ((sick - image >= visible) & (lung_map > 0)).astype(np.uint8)
        image = sick
    if shutter.any():
        image = image * (1.0 - shutter) + shutter * shutter_level
        out_of_field = shutter > 0.5
        lung_map[out_of_field] = 0
        lesion[out_of_field] = 0
    if noise:
        sigma = float(noise_rng.uniform(0.008, 0.02))
        grain = ndimage.gaussian_filter(noise_rng.standard_normal((h, w)).astype(np.float32), 0.5 * blur)
        image = image + sigma / (grain.std() + 1e-6) * np.sqrt(0.2 + image) * grain
    if marker is not None:
        glyph, level, boxed = marker
        if boxed:  # a dark plate behind the letter
            plate = ndimage.binary_dilation(glyph > 0, iterations=max(1, int(round(0.01 * min(h, w)))))
            image = np.where(plate, 0.08, image)
        image = image * (1.0 - glyph) + level * glyph
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
    with atomic_write(output) as tmp:
        Image.fromarray(phantom_montage(n, size, seed)).save(tmp, format="PNG", optimize=True)
    return output


if __name__ == "__main__":
    import fire

    fire.Fire(_save_montage)
