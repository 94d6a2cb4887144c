"""ART-ASyn texture anomaly synthesis: lung-constrained, opacity-like anomalies with exact masks.

The published pipeline (ALGORITHM.md section 2), vectorised and size-independent:

1. brush: a cloudy streak texture (procedural by default, see :mod:`bundle.synthesis.brush`, or any grayscale
   image file) painted in the colour of the image's 85th intensity percentile;
2. strokes: per lung a stroke count from {0, 1, 2, 3, 4, 10, ..., 14} (P(0) = 0.2, never zero in
   every lung), each a quadratic Bezier curve between two random lung points with a jittered
   control point;
3. stamps in two brush sizes, ``min(100, max(1, int((chord + |control offset|) / spacing)))`` per
   stroke and size (spacing ``max(1, int(0.05 x width))``) at distinct curve samples, jittered in
   width, rotation, opacity and flow, composited 'over' (order-free, in log space) into layer A;
4. effects: B = blur(A), C = crystallize(A) (Voronoi cell means), D = blur(C), all from the
   unscaled A; then A's alpha x 0.4, C and D x 0.5, and B, C, D, C, B composited over A. As in the
   published code, colour and alpha are filtered channel by channel: B, C and D fade to black
   where A has no paint, so their faint edges brighten the image less than their alpha says;
5. anatomy: alpha x soft lung mask (dilated, blurred) x rib factor (0.5 I + 0.5), x1.5, clipped;
6. blend over the image, then the pixel-wise maximum with the image (opacities only brighten);
7. mask = alpha > 80/255.

The published code keeps alphas in 8 bits and truncates after every scaling; that loss is
reproduced on average (a tone curve on the brush for the per-stamp opacity, half a level per later
scaling). ``benchmarks/bench_synthesis.py`` runs the published code side by side on the same
images and lung maps and compares the anomaly statistics and speed.

Every length is given at the 256 px reference size and scaled by ``sqrt(H * W) / 256``.
Deliberate differences from the published code: sizes scale with the image, no lung gives no
anomaly (reported in the info) instead of an endless loop, an empty mask is redrawn a bounded
number of times, and it is ~50x faster (no per-stamp resampling, no Python loop over Voronoi cells).

Approximations made for speed: stamp widths and angles are quantised to 8 x 36 pre-rendered stamps;
the 0.95 stroke alpha is applied to all strokes together (exact where strokes do not overlap);
Voronoi cells are labelled on a 2x coarser grid; large blurs run at reduced resolution; above
``max_paint_size`` px stamps are painted on a coarser grid.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from bundle.synthesis.brush import (
    BRUSH_SHAPE,
    load_brush,
    procedural_brush,
    quantization_tone,
    stamp_bank,
)

__all__ = [
    "TextureAnomalyParams",
    "synthesize_texture_anomaly",
    "soft_lung_mask",
    "lung_margin",
    "stamp_counts",
    "Brush",
    "default_brush",
    "Prepared",
    "prepare",
    "draw",
    "no_anomaly",
]


@dataclass(frozen=True)
class TextureAnomalyParams:
    """Parameters of the texture anomaly synthesis; defaults are the published values.

    Lengths are in pixels of a ``reference_size`` x ``reference_size`` image and scale with the image.

    Args:
        reference_size: image size the pixel lengths refer to.
        grey_percentile: brush colour = this intensity percentile of the image.
        stroke_counts: stroke counts drawn per lung (uniformly among the non-zero ones).
        zero_stroke_prob: probability of 0 strokes in a lung (when 0 is in ``stroke_counts``).
        control_offset: Bezier control point = chord midpoint + uniform offset in +-this, per axis.
        curve_samples: points sampled along each curve (stamps sit at random samples).
        brush_widths: base stamp widths, one layer per width and stroke.
        stamp_spacing: stamp spacing as a fraction of the brush width: spacing = max(1, int(fraction x
            width)) px; stamps per stroke and width = min(curve_samples, max(1, int((chord + |control
            offset|) / spacing))), at distinct curve samples (drawn without replacement).
        min_width_fraction: per-stamp width drawn uniformly in [fraction * width, width).
        opacity_range, flow_range: per-stamp alpha = uniform(opacity_range) * uniform(flow_range).
        alpha_levels: the published code keeps every alpha in 8 bits and truncates it after each
            scaling (stamp opacity, layer alphas, crystallize means, lung/rib weighting, gain). This
            is reproduced on average: the brush gets the tone curve of the truncated stamp opacity
            (:func:`bundle.synthesis.brush.quantization_tone`, which also makes the log-space stamping deposit
            ``opacity x texel`` on average) and every later scaling loses half a level (0: exact
            float alphas).
        support_level: where the painted layer A reaches this alpha it has the brush colour, elsewhere
            black; the blur and crystallize layers average that colour channel by channel as the
            published code does, so their faint edges are darker than the brush (0: the brush colour
            everywhere, i.e. premultiplied effects).
        layer_alpha: alpha scale of the painted stroke layer.
        blur_radius: Gaussian sigma of layer B = blur(A).
        crystal_seeds: number of Voronoi seeds of the crystallize effect (C).
        crystal_blur_radius: Gaussian sigma of layer D = blur(C).
        stroke_alpha: alpha scale of A itself in the composite, applied after B, C and D were computed
            from the unscaled A.
        blur_alpha, crystal_alpha, crystal_blur_alpha: alpha scales of layers B, C, D.
        composite_order: layers composited over A, in order (letters B, C, D).
        lung_dilation: side of the square dilating the lung mask.
        lung_blur: side of the Gaussian kernel blurring the dilated lung mask (sigma as OpenCV derives it).
        rib_weight: rib factor = rib_weight * I + (1 - rib_weight).
        alpha_gain: final alpha gain before clipping to [0, 1].
        mask_threshold: mask = final alpha > this.
        width_steps, angle_steps: quantisation of stamp width and rotation (pre-rendered stamps).
        max_paint_size: images larger than this (geometric mean of H and W) get their stamps painted on a
            proportionally coarser grid, then upsampled (bounded memory and time at any resolution).
    """

    reference_size: int = 256
    grey_percentile: float = 85.0
    stroke_counts: tuple[int, ...] = (0, 1, 2, 3, 4, 10, 11, 12, 13, 14)
    zero_stroke_prob: float = 0.2
    control_offset: float = 30.0
    curve_samples: int = 100
    brush_widths: tuple[float, ...] = (80.0, 50.0)
    stamp_spacing: float = 0.05
    min_width_fraction: float = 0.3
    opacity_range: tuple[float, float] = (0.07, 0.3)
    flow_range: tuple[float, float] = (0.67, 1.0)
    alpha_levels: int = 255
    support_level: float = 1.0 / 255
    layer_alpha: float = 0.95
    blur_radius: float = 8.0
    crystal_seeds: int = 500
    crystal_blur_radius: float = 3.0
    stroke_alpha: float = 0.4
    blur_alpha: float = 1.0
    crystal_alpha: float = 0.5
    crystal_blur_alpha: float = 0.5
    composite_order: str = "BCDCB"
    lung_dilation: int = 7
    lung_blur: int = 31
    rib_weight: float = 0.5
    alpha_gain: float = 1.5
    mask_threshold: float = 80.0 / 255.0
    width_steps: int = 8
    angle_steps: int = 36
    max_paint_size: int = 512

    def __post_init__(self) -> None:
        counts = np.asarray(self.stroke_counts)
        if counts.size == 0 or (counts < 0).any() or not (counts > 0).any():
            raise ValueError(
                f"stroke_counts needs at least one positive count and no negative ones, got {self.stroke_counts}"
            )
        if not 0.0 <= self.zero_stroke_prob < 1.0:
            raise ValueError(f"zero_stroke_prob must be in [0, 1), got {self.zero_stroke_prob}")
        if not 0.0 < self.min_width_fraction <= 1.0 or self.stamp_spacing <= 0:
            raise ValueError("min_width_fraction must be in (0, 1] and stamp_spacing > 0")
        if set(self.composite_order) - set("BCD"):
            raise ValueError(f"composite_order may only contain B, C, D, got {self.composite_order!r}")
        if (
            min(self.curve_samples - 1, self.crystal_seeds, self.width_steps, self.angle_steps) < 1
            or self.max_paint_size < 16
        ):
            raise ValueError(
                "curve_samples >= 2, crystal_seeds, width_steps, angle_steps >= 1 and max_paint_size >= 16 are required"
            )


DEFAULT_PARAMS = TextureAnomalyParams()


def _scale(shape: Sequence[int], params: TextureAnomalyParams) -> float:
    """Pixel-length scale of an image of this (H, W) relative to the reference size."""
    return float(np.sqrt(shape[0] * shape[1])) / params.reference_size


def _lung_filter_sizes(s: float, params: TextureAnomalyParams) -> tuple[int, float, int]:
    """Dilation half-width, blur sigma and blur radius (px) of the soft lung mask at length scale ``s``."""
    half = int(round((params.lung_dilation - 1) / 2 * s))
    ksize = params.lung_blur * s
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a kernel of this size
    radius = int(round((ksize - 1) / 2))
    return half, max(sigma, 1e-3), max(radius, 0)


def lung_margin(shape: Sequence[int], params: TextureAnomalyParams | None = None) -> int:
    """How far (px, chessboard distance) outside the lungs an anomaly can reach: dilation plus blur radius."""
    params = params or DEFAULT_PARAMS
    half, _, radius = _lung_filter_sizes(_scale(shape, params), params)
    return half + radius


def soft_lung_mask(
    lung: np.ndarray, params: TextureAnomalyParams | None = None, scale: float | None = None
) -> np.ndarray:
    """Lung mask dilated with a square and blurred with a truncated Gaussian, in [0, 1].

    Args:
        lung: (H, W) label map, any value > 0 is lung.
        params: synthesis parameters (``lung_dilation``, ``lung_blur``).
        scale: pixel-length scale (default: from ``lung.shape``; give it when ``lung`` is a crop).

    Returns:
        (H, W) float32; zero beyond :func:`lung_margin` px (chessboard distance) of the lungs.
    """
    params = params or DEFAULT_PARAMS
    half, sigma, radius = _lung_filter_sizes(_scale(lung.shape, params) if scale is None else scale, params)
    m = (lung > 0).astype(np.uint8)
    if half > 0:
        m = ndi.maximum_filter1d(
            ndi.maximum_filter1d(m, 2 * half + 1, axis=0, mode="constant"), 2 * half + 1, axis=1, mode="constant"
        )
    m = m.astype(np.float32)
    return _smooth(m, sigma, reach=radius) if radius > 0 else m


def _smooth(x: np.ndarray, sigma: float, reach: int | None = None) -> np.ndarray:
    """Gaussian blur (sigma in px, zero outside the image), at reduced resolution for large sigma.

    For sigma >= 5 px the image is block-averaged by ``f = sigma // 2.5``, blurred with the remaining
    sigma and bilinearly upsampled: a few tenths of a millisecond instead of a few milliseconds.

    Args:
        x: (..., H, W) float32 image(s); leading axes are separate images.
        sigma: Gaussian standard deviation in pixels.
        reach: if given, the kernel is truncated so that no value spreads farther than this many
            pixels (chessboard distance), including the block averaging and upsampling; else 3 sigma.
    """
    if sigma < 0.3:
        return x
    lead = (0.0,) * (x.ndim - 2)
    f = max(1, int(sigma // 2.5))
    if f == 1:
        radius = int(3 * sigma + 0.5) if reach is None else reach
        return ndi.gaussian_filter(x, lead + (sigma, sigma), truncate=(radius + 0.25) / sigma, mode="constant")
    h, w = x.shape[-2:]
    hp, wp = -(-h // f) * f, -(-w // f) * f
    if (hp, wp) != (h, w):
        x = np.pad(x, ((0, 0),) * (x.ndim - 2) + ((0, hp - h), (0, wp - w)))
    small = np.zeros(x.shape[:-2] + (hp // f, wp // f), np.float32)
    for i in range(f):
        for j in range(f):
            small += x[..., i::f, j::f]
    small *= np.float32(1.0 / (f * f))
    rest = np.sqrt(max(sigma**2 - (f * f - 1) / 12.0, 0.25)) / f
    # a low-res value reaches r * f + 1.5 f full-res pixels after block averaging and upsampling
    radius = int(3 * rest + 0.5) if reach is None else max(0, int((reach - 1.5 * f) // f))
    small = ndi.gaussian_filter(small, lead + (rest, rest), truncate=(radius + 0.25) / rest, mode="constant")
    return _upsample(small, f, (h, w))


def _upsample(small: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of the last two axes by an integer factor (pixel centres aligned, edges clamped),
    cropped to ``shape``."""
    # output pixel f*i + j lies at low-res coordinate i + (j + 0.5) / f - 0.5: a fixed blend of two neighbours
    pad = np.pad(small, ((0, 0),) * (small.ndim - 2) + ((1, 1), (1, 1)), mode="edge")
    n0, n1 = small.shape[-2:]
    tmp = np.empty(small.shape[:-2] + (n0 * f, n1 + 2), np.float32)
    for j in range(f):
        d = (j + 0.5) / f - 0.5
        lo = int(np.floor(d))
        t = np.float32(d - lo)
        tmp[..., j::f, :] = pad[..., 1 + lo : 1 + lo + n0, :] * (1 - t) + pad[..., 2 + lo : 2 + lo + n0, :] * t
    out = np.empty(small.shape[:-2] + (n0 * f, n1 * f), np.float32)
    for j in range(f):
        d = (j + 0.5) / f - 0.5
        lo = int(np.floor(d))
        t = np.float32(d - lo)
        out[..., j::f] = tmp[..., 1 + lo : 1 + lo + n1] * (1 - t) + tmp[..., 2 + lo : 2 + lo + n1] * t
    return out[..., : shape[0], : shape[1]]


def _crystallize(
    layers: Sequence[np.ndarray], n_seeds: int, factor: int, rng: np.random.RandomState
) -> list[np.ndarray]:
    """Voronoi 'crystallize': every pixel takes the mean of each layer over its cell (the same cells for all).

    Cells of ``n_seeds`` random seeds are found on a grid ``factor`` times coarser (nearest seed by
    a Euclidean feature transform, no loop over cells); the means are exact full-resolution means.

    Returns:
        per layer, the crystallized layer on the coarse grid (block (i, j) covers full-resolution
        pixels ``[i * factor, (i + 1) * factor) x [j * factor, (j + 1) * factor)``), float32.
    """
    h, w = layers[0].shape
    hs, ws = -(-h // factor), -(-w // factor)
    seeds = rng.randint(0, hs * ws, size=n_seeds)
    owner = np.full(hs * ws, -1, np.int64)
    owner[seeds] = np.arange(n_seeds)
    iy, ix = ndi.distance_transform_edt((owner < 0).reshape(hs, ws), return_distances=False, return_indices=True)
    cells_small = owner.reshape(hs, ws)[iy, ix]
    cells = cells_small.ravel()

    def block_sums(x: np.ndarray) -> np.ndarray:
        # sums over the factor x factor blocks of the coarse grid: every pixel of a block is in its cell
        if factor == 1:
            return x.ravel()
        padded = np.zeros((hs * factor, ws * factor), np.float32)
        padded[:h, :w] = x
        total = np.zeros((hs, ws), np.float32)
        for i in range(factor):
            for j in range(factor):
                total += padded[i::factor, j::factor]
        return total.ravel()

    block_sizes = np.full((hs, ws), factor * factor, np.float32)
    block_sizes[-1, :] = (h - (hs - 1) * factor) * factor  # the last row and column of blocks may be cut
    block_sizes[:, -1] = (w - (ws - 1) * factor) * factor
    block_sizes[-1, -1] = (h - (hs - 1) * factor) * (w - (ws - 1) * factor)
    sizes = np.maximum(np.bincount(cells, weights=block_sizes.ravel(), minlength=n_seeds), 1)
    return [
        (np.bincount(cells, weights=block_sums(a), minlength=n_seeds) / sizes).astype(np.float32)[cells_small]
        for a in layers
    ]


def _draw_stroke_counts(n_lungs: int, params: TextureAnomalyParams, rng: np.random.RandomState) -> np.ndarray:
    """Per-lung stroke counts, never all zero (bounded redraws, then one lung forced non-zero).

    One ``rng.choice`` per lung, in label order, with P(0) = ``zero_stroke_prob`` and the rest uniform:
    the published draw, so the same generator state gives the published code's counts (which lets
    the benchmark compare both on common random numbers).
    """
    choices = np.asarray(params.stroke_counts)
    positive = choices[choices > 0]
    n_zero = int((choices == 0).sum())
    if n_zero:
        probs = np.where(
            choices == 0, params.zero_stroke_prob / n_zero, (1.0 - params.zero_stroke_prob) / positive.size
        )
    else:
        probs = np.full(choices.size, 1.0 / choices.size)
    for _ in range(16):
        counts = np.array([rng.choice(choices, p=probs) for _ in range(n_lungs)], np.int64)
        if counts.any():
            return counts
    counts[rng.randint(n_lungs)] = positive[rng.randint(positive.size)]
    return counts


class Brush:
    """A texture and the key its stamp banks are cached under."""

    def __init__(self, brush: str | os.PathLike | np.ndarray | None, brush_seed: int) -> None:
        if brush is None:
            self.texture, self.key = procedural_brush(BRUSH_SHAPE, seed=brush_seed), ("procedural", brush_seed)
        elif isinstance(brush, np.ndarray):
            tex = np.asarray(brush, np.float32)
            if tex.ndim != 2 or not tex.max() > 0:
                raise ValueError(f"brush array must be a non-black 2D texture, got shape {tex.shape}")
            self.texture = tex / tex.max()
            self.key = ("array", hashlib.sha1(self.texture.tobytes()).hexdigest(), self.texture.shape)
        else:
            if not Path(brush).is_file():
                raise FileNotFoundError(
                    f"brush texture {brush} not found (the 'brush' option: a grayscale image file, or None)"
                )
            self.texture, self.key = load_brush(brush), ("file", str(Path(brush).absolute()))


_DEFAULT_BRUSHES: dict[int, Brush] = {}


def default_brush(seed: int = 0) -> Brush:
    if seed not in _DEFAULT_BRUSHES:
        _DEFAULT_BRUSHES[seed] = Brush(None, seed)
    return _DEFAULT_BRUSHES[seed]


def _paint_strokes(
    lung: np.ndarray,
    labels: np.ndarray,
    s: float,
    params: TextureAnomalyParams,
    brush: Brush,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, int]:
    """Layer A: Bezier strokes of jittered stamps between random lung points. Returns (alpha, strokes)."""
    h, w = lung.shape
    counts = _draw_stroke_counts(len(labels), params, rng)
    flat = lung.ravel()
    inside = np.flatnonzero(flat)
    inside_label = flat[inside]
    ends = []
    for label, n in zip(labels, counts, strict=True):
        if n:
            where = inside[inside_label == label]
            ends.append(where[rng.randint(0, where.size, size=(n, 2))])
    ends = np.concatenate(ends)
    p0 = np.stack(np.divmod(ends[:, 0], w), -1).astype(np.float64)
    p2 = np.stack(np.divmod(ends[:, 1], w), -1).astype(np.float64)
    off = params.control_offset * s
    offset = rng.uniform(-off, off, size=p0.shape)
    p1 = (p0 + p2) / 2 + offset
    t = np.linspace(0.0, 1.0, params.curve_samples)[None, :, None]
    curves = (1 - t) ** 2 * p0[:, None] + 2 * (1 - t) * t * p1[:, None] + t**2 * p2[:, None]  # (n, samples, 2)
    # the published length estimate: chord plus the control point's offset (not the arc length)
    lengths = np.linalg.norm(p2 - p0, axis=-1) + np.linalg.norm(offset, axis=-1)

    # stamps are painted on a grid f times coarser when the image is larger than max_paint_size (the
    # blur and crystallize layers hide the difference), at a scale rounded to 1/8 octave, so that a few
    # cached stamp banks serve images of every size
    f = max(1, int(np.ceil(s * params.reference_size / params.max_paint_size - 1e-9)))
    paint_shape = (-(-h // f), -(-w // f))
    paint_scale = float(2.0 ** (np.round(8 * np.log2(s / f)) / 8))
    lo = params.min_width_fraction
    steps = params.width_steps if lo < 1 else 1
    bins = lo + (1 - lo) * (np.arange(steps) + 0.5) / steps
    tone_key = (params.opacity_range, params.flow_range, params.alpha_levels)
    tone = _tone(*tone_key)
    bank = stamp_bank(
        brush.texture,
        brush.key,
        tuple(bw * paint_scale for bw in params.brush_widths),
        tuple(bins),
        params.angle_steps,
        tone,
        tone_key,
    )
    rows, cols, variants, alphas = [], [], [], []
    for b, base_width in enumerate(params.brush_widths):
        pts, _ = _stamp_points(curves, lengths, base_width * s, params, rng)
        n = len(pts)
        pts = (pts + 0.5) / f - 0.5
        frac = rng.uniform(lo, 1.0, size=n)
        angle = rng.uniform(0.0, params.angle_steps, size=n)  # in angle steps of 360 / angle_steps degrees
        alphas.append(rng.uniform(*params.opacity_range, size=n) * rng.uniform(*params.flow_range, size=n))
        rows.append(np.clip(np.rint(pts[:, 0]), 0, paint_shape[0] - 1).astype(np.int64))
        cols.append(np.clip(np.rint(pts[:, 1]), 0, paint_shape[1] - 1).astype(np.int64))
        scale_bin = np.minimum(((frac - lo) / max(1 - lo, 1e-9) * steps).astype(np.int64), steps - 1)
        variants.append(bank.variant(b, scale_bin, np.rint(angle).astype(np.int64) % params.angle_steps))
    a = bank.paint(
        paint_shape, np.concatenate(rows), np.concatenate(cols), np.concatenate(variants), np.concatenate(alphas)
    )
    if f > 1:
        a = _upsample(a, f, (h, w))
    return _truncated(a * np.float32(params.layer_alpha), params), int(counts.sum())


@functools.lru_cache(maxsize=8)
def _tone(opacity_range: tuple[float, float], flow_range: tuple[float, float], levels: int) -> np.ndarray:
    return quantization_tone(opacity_range, flow_range, levels)


def _truncated(x: np.ndarray, params: TextureAnomalyParams, times: float = 1.0) -> np.ndarray:
    """``x`` less the mean loss of ``times`` truncations to ``alpha_levels`` levels (half a level each), >= 0."""
    if not params.alpha_levels:
        return x
    return np.maximum(x - np.float32(0.5 * times / params.alpha_levels), np.float32(0.0))


def stamp_counts(lengths: np.ndarray, width: float, params: TextureAnomalyParams | None = None) -> np.ndarray:
    """Stamps per stroke for one brush width: ``min(curve_samples, max(1, int(length / spacing)))``.

    Args:
        lengths: (n,) stroke lengths in px, estimated as chord + |control point offset|.
        width: the brush's base width in px (already scaled to the image).
        params: synthesis parameters (``stamp_spacing``, ``curve_samples``).

    Returns:
        (n,) int64 counts; spacing = ``max(1, int(stamp_spacing * width))`` px (4 and 2 px for the
        published 80 and 50 px brushes).
    """
    params = params or DEFAULT_PARAMS
    spacing = max(1, int(params.stamp_spacing * width + 1e-9))
    counts = (np.asarray(lengths, np.float64) / spacing).astype(np.int64)
    return np.clip(counts, 1, params.curve_samples)


def _stamp_points(
    curves: np.ndarray, lengths: np.ndarray, width: float, params: TextureAnomalyParams, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Stamp centres of one brush width: :func:`stamp_counts` distinct samples of each curve.

    Args:
        curves: (n, samples, 2) points along each stroke.
        lengths: (n,) length estimates of the strokes (chord + |control offset|), px.
        width: brush base width, px.

    Returns:
        ((stamps, 2) centres, stroke by stroke, (n,) stamps per stroke).
    """
    n_curves, n_samples = curves.shape[:2]
    per_stroke = np.minimum(stamp_counts(lengths, width, params), n_samples)
    # without replacement: the first per_stroke[i] entries of a random permutation of each curve's samples
    order = np.argsort(rng.rand(n_curves, n_samples), axis=1)
    taken = np.arange(n_samples)[None, :] < per_stroke[:, None]
    return curves[np.repeat(np.arange(n_curves), per_stroke), order[taken]], per_stroke


def _effects(
    a: np.ndarray, s: float, n_seeds: int, params: TextureAnomalyParams, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Composite B, C, D over the scaled A; returns (alpha, colour fraction), both (H, W) float32.

    Every layer is an RGBA image whose colour is the brush colour where the painted layer A has any
    alpha and black elsewhere; the published code blurs and crystallizes colour and alpha channel by
    channel (not premultiplied), so B, C and D fade to black at their edges, and a faint halo around
    an anomaly brightens the image far less than its alpha alone would. The colour fraction is that
    composite colour over the brush colour ('over' composited in premultiplied form).
    """
    order = params.composite_order
    one = np.float32(1.0)
    support = (a >= params.support_level).astype(np.float32)
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (1 - alpha, colour fraction x alpha)
    if "B" in order:
        blurred, blurred_support = _smooth(np.stack([a, support]), params.blur_radius * s)
        alpha = blurred * np.float32(params.blur_alpha)
        layers["B"] = (one - alpha, blurred_support * alpha)
    if "C" in order or "D" in order:
        # Voronoi cells are ~11 px wide at 256 px: labelling them on a 2x coarser grid is invisible after D's blur
        factor = max(1, int(round(2 * s)))
        c_small, cf_small = _crystallize((a, support), n_seeds, factor, rng)
        c_small = _truncated(c_small, params)  # the cell means are stored in 8 bits
        # C is constant on the coarse grid's blocks: scale it there, then repeat to full resolution
        alpha = _truncated(c_small * np.float32(params.crystal_alpha), params)
        layers["C"] = tuple(_repeat(x, factor, a.shape) for x in (one - alpha, cf_small * alpha))
        sigma = params.crystal_blur_radius * s / factor
        d = np.stack([c_small, cf_small])
        d = ndi.gaussian_filter(d, (0.0, sigma, sigma), truncate=3.0, mode="nearest") if sigma > 0.3 else d
        d = _upsample(d, factor, a.shape) if factor > 1 else d
        alpha = _truncated(d[0] * np.float32(params.crystal_blur_alpha), params)
        layers["D"] = (one - alpha, d[1] * alpha)
    # the published code scales A's alpha only now, after B, C and D were made from the unscaled A
    a_scaled = _truncated(a * np.float32(params.stroke_alpha), params)
    uncovered, colour = one - a_scaled, a_scaled * support
    for name in order:
        rest, premultiplied = layers[name]
        colour *= rest
        colour += premultiplied
        uncovered *= rest
    total = one - uncovered
    colour /= np.maximum(total, np.float32(1e-6))
    return total, np.minimum(colour, one, out=colour)


def _repeat(small: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor, cropped to ``shape``."""
    if factor == 1:
        return small
    return small.repeat(factor, 0).repeat(factor, 1)[: shape[0], : shape[1]]


def synthesize_texture_anomaly(
    image: np.ndarray,
    lung: np.ndarray,
    rng: np.random.RandomState,
    params: TextureAnomalyParams | None = None,
    brush: Brush | None = None,
    max_attempts: int = 4,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Paint one texture anomaly into the lungs of an image.

    Work is confined to the lungs' bounding box grown by :func:`lung_margin` (nothing outside it can
    change); Voronoi seeds keep the published density (``crystal_seeds`` per image).

    Args:
        image: (H, W) float image in [0, 1], bright bone.
        lung: (H, W) integer lung label map (0 background; every positive label is one lung).
        rng: the random generator all draws come from.
        params: synthesis parameters (published defaults when None).
        brush: brush texture (the procedural default when None).
        max_attempts: redraws when the mask comes out empty (e.g. one very short faint stroke).

    Returns:
        ``(anomalous, mask, info)``: (H, W) float32 image (never darker than ``image``), (H, W) uint8
        0/1 mask, and a dict with ``anomaly`` (bool), ``area`` (mask fraction of the image),
        ``lung_fraction`` (mask area / lung area), ``strokes``, ``attempts`` and ``reason``.
    """
    params = params or DEFAULT_PARAMS
    return draw(prepare(image, lung, params), rng, params, brush or default_brush(), max_attempts)


@dataclass
class Prepared:
    """What every anomaly drawn into one image shares (computed once for several variants)."""

    image: np.ndarray
    labels: np.ndarray
    lung_area: int = 0
    roi: tuple = ()
    lung_roi: np.ndarray | None = None
    scale: float = 1.0
    grey: np.float32 = np.float32(0)
    n_seeds: int = 1
    weight: np.ndarray | None = None


def prepare(image: np.ndarray, lung: np.ndarray, params: TextureAnomalyParams) -> Prepared:
    image = np.asarray(image, np.float32)
    lung = np.asarray(lung)
    if image.ndim != 2 or lung.shape != image.shape:
        raise ValueError(f"need (H, W) image and lung map of the same shape, got {image.shape} and {lung.shape}")
    if lung.dtype.kind not in "ui":
        lung = lung.astype(np.int64)
    sizes = np.bincount(np.clip(lung, 0, None).ravel()) if lung.dtype.kind == "i" else np.bincount(lung.ravel())
    labels = np.flatnonzero(sizes[1:]) + 1
    if labels.size == 0:
        return Prepared(image, labels)
    h, w = image.shape
    s = _scale((h, w), params)
    sub = max(1, int(np.sqrt(image.size / 16384)))  # the percentile of ~16k evenly spread pixels
    grey = np.float32(np.percentile(image[::sub, ::sub], params.grey_percentile))
    # the region anomalies can reach: the lungs' bounding box grown by the soft-mask margin
    m = lung_margin((h, w), params)
    any_rows, any_cols = np.flatnonzero((lung > 0).any(1)), np.flatnonzero((lung > 0).any(0))
    r0, r1 = max(0, any_rows[0] - m), min(h, any_rows[-1] + m + 1)
    c0, c1 = max(0, any_cols[0] - m), min(w, any_cols[-1] + m + 1)
    roi = (slice(r0, r1), slice(c0, c1))
    img, lung_roi = image[roi], lung[roi]
    weight = soft_lung_mask(lung_roi, params, s)
    weight *= (np.float32(params.rib_weight) * img + np.float32(1.0 - params.rib_weight)) * np.float32(
        params.alpha_gain
    )
    n_seeds = max(1, int(round(params.crystal_seeds * img.size / image.size)))
    return Prepared(image, labels, int(sizes[labels].sum()), roi, lung_roi, s, grey, n_seeds, weight)


def draw(
    prep: Prepared, rng: np.random.RandomState, params: TextureAnomalyParams, brush: Brush, max_attempts: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    image = prep.image
    out, mask = image.copy(), np.zeros(image.shape, np.uint8)
    if prep.labels.size == 0:
        return out, mask, no_anomaly("no lung")
    s, img = prep.scale, image[prep.roi]
    for attempt in range(1, max(1, max_attempts) + 1):  # noqa: B007 - the count is reported after the loop
        a, strokes = _paint_strokes(prep.lung_roi, prep.labels, s, params, brush, rng)
        alpha, colour = _effects(a, s, prep.n_seeds, params, rng)
        # lung x rib weighting, then the gain: two truncations, the first one scaled by the gain
        alpha = np.minimum(_truncated(alpha * prep.weight, params, 1.0 + params.alpha_gain), 1.0)
        mask_roi = alpha > params.mask_threshold
        if mask_roi.any():
            break
    out[prep.roi] = np.maximum(img + alpha * (prep.grey * colour - img), img)
    mask[prep.roi] = mask_roi
    area = int(mask_roi.sum())
    info = {
        "anomaly": area > 0,
        "area": area / mask.size,
        "lung_fraction": area / prep.lung_area,
        "strokes": strokes,
        "attempts": attempt,
        "reason": "" if area else "empty mask",
    }
    return out, mask, info


def no_anomaly(reason: str) -> dict[str, Any]:
    return {"anomaly": False, "area": 0.0, "lung_fraction": 0.0, "strokes": 0, "reason": reason}
