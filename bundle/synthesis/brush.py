"""Brush textures and vectorised stamping for the ART-ASyn texture anomaly synthesis.

The published pipeline paints with a small grey texture (a cloudy, blotchy diagonal streak with a
bright core on black, 168x106 px) used as an alpha stamp. This module makes such a texture procedurally (or
loads a user texture), pre-renders it at a few widths and rotations (a :class:`StampBank`), and
composites thousands of jittered stamps in one scatter-add instead of one resampling per stamp.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from bundle.io import read_image

__all__ = ["procedural_brush", "load_brush", "StampBank", "stamp_bank", "quantization_tone"]

# (height, width) of the published brush texture
BRUSH_SHAPE = (106, 168)


def _unit_field(rng: np.random.RandomState, shape: tuple[int, int], sigma) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean and unit standard deviation."""
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def _streak_field(
    rng: np.random.RandomState, shape: tuple[int, int], along: float, across: float, angle: float
) -> np.ndarray:
    """Unit noise stretched along a direction rising ``angle`` degrees to the right (sigmas in px)."""
    h, w = shape
    n = int(np.ceil(np.hypot(h, w))) + 8
    f = ndi.gaussian_filter(rng.standard_normal((n, n)), (across, along), mode="wrap")
    f = ndi.rotate(f, angle, reshape=False, order=1, mode="wrap")
    r0, c0 = (n - h) // 2, (n - w) // 2
    f = f[r0 : r0 + h, c0 : c0 + w]
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def procedural_brush(
    shape: tuple[int, int] = BRUSH_SHAPE, seed: int = 0, angle: float = 12.0, mean: float = 0.06
) -> np.ndarray:
    """Make a cloudy streak brush texture: a blotchy diagonal streak with a bright core, on black.

    Built to look like, and have the statistics of, the published ART-ASyn brush (ALGORITHM.md
    section 2: mean about 0.06, most texels near black, a small saturated core, streaks rising
    slightly to the right): a broad blotchy haze, thin wisps along the streak direction, an elongated
    bright core in the lower right of the band, and small bright blotches above it, faded to black at
    the border; a final exponent sets the mean.

    Args:
        shape: (height, width) of the texture in pixels.
        seed: seed of the texture's own generator (the texture is a fixed asset, not a per-call draw).
        angle: direction of the streak, degrees rising to the right.
        mean: mean texel value of the result (the published texture's is 0.062).

    Returns:
        (height, width) float32 texture in [0, 1] with maximum 1, zero at its border.
    """
    if not 0.0 < mean < 0.5:
        raise ValueError(f"brush mean must be in (0, 0.5), got {mean}")
    rng = np.random.RandomState(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    th = np.deg2rad(angle)
    # coordinates along (u) and across (v, downwards) the streak, in px, from a point below the centre
    u = (xx - 0.5 * w) * np.cos(th) - (yy - 0.55 * h) * np.sin(th)
    v = (xx - 0.5 * w) * np.sin(th) + (yy - 0.55 * h) * np.cos(th)
    # haze: blotchy clouds over the left and middle of the band
    envelope = np.exp(-0.5 * ((u + 0.15 * w) / (0.32 * w)) ** 2 - 0.5 * (v / (0.28 * h)) ** 2)
    cloud = (
        envelope
        * np.clip(0.6 + 0.5 * _unit_field(rng, shape, 5.0) + 0.3 * _unit_field(rng, shape, 2.0), 0.0, None) ** 2
    )
    # wisps: thin streaks along the band
    wisps = np.clip(_streak_field(rng, shape, 14.0, 1.4, angle), 0.0, None) ** 2
    wisps *= np.exp(-0.5 * (v / (0.22 * h)) ** 2) * np.clip(1.0 - (u / (0.5 * w)) ** 2, 0.0, None)
    # core: a flat-topped elongated ridge, brighter towards its right end, slightly ragged
    cu, cv = 0.22 * w, 0.16 * h
    core = np.exp(-0.5 * ((u - cu) / (0.17 * w)) ** 4 - 0.5 * ((v - cv) / (0.045 * h)) ** 4)
    core *= np.clip(1.0 + 0.2 * _streak_field(rng, shape, 4.0, 1.0, angle), 0.0, None) * (
        0.75 + 0.25 * np.tanh((u - cu) / (0.1 * w))
    )
    # blotches: a few small bright spots scattered above the core
    blotches = np.zeros(shape)
    for _ in range(10):
        by, bx, r = (
            rng.uniform(0.15 * h, 0.7 * h),
            rng.uniform(0.3 * w, 0.8 * w),
            rng.uniform(1.5, 3.5) * h / BRUSH_SHAPE[0],
        )
        blotches += rng.uniform(0.25, 0.8) * np.exp(-0.5 * (((yy - by) / r) ** 2 + ((xx - bx) / (1.8 * r)) ** 2))
    tex = 0.3 * cloud / max(cloud.max(), 1e-12) + 0.3 * wisps / max(wisps.max(), 1e-12) + core + 0.5 * blotches
    tex = np.clip(tex / np.percentile(tex[core > 0.5], 90), 0.0, 1.0)  # the core saturates
    r2 = ((yy - (h - 1) / 2) / ((h - 1) / 2)) ** 2 + ((xx - (w - 1) / 2) / ((w - 1) / 2)) ** 2
    tex *= np.clip(1.3 * (1.0 - r2), 0.0, 1.0)  # black border: stamps have no edges
    lo, hi = 0.2, 5.0  # the exponent giving the wanted mean (the mean falls as the exponent grows)
    for _ in range(40):
        g = np.sqrt(lo * hi)
        lo, hi = (g, hi) if (tex**g).mean() > mean else (lo, g)
    tex = tex ** np.sqrt(lo * hi)
    return (tex / tex.max()).astype(np.float32)


def load_brush(path: str | Path) -> np.ndarray:
    """Read a user brush texture (any format the bundle reads; bright = paint) as float32 (H, W) in [0, 1]."""
    tex, _ = read_image(str(path))
    tex = np.asarray(tex, dtype=np.float32)
    if tex.ndim != 2 or min(tex.shape) < 4 or not tex.max() > 0:
        raise ValueError(
            f"brush texture {path}: need a non-black 2D grey image of at least 4x4 px, got shape {tex.shape}"
        )
    return tex / tex.max()


class StampBank:
    """A texture pre-rendered at several widths and rotations, for fast stamping by array slicing.

    Variant ``(b, s, a)`` is the texture resized to width ``widths[b] * scales[s]`` (aspect kept),
    rotated by ``a * 360 / n_angles`` degrees and cropped to its non-zero box. A half turn is a
    point reflection, so the second half of the angles are reversed views of the first half.

    Args:
        texture: (h, w) float texture in [0, 1].
        widths: base stamp widths in pixels (one per brush size).
        scales: relative widths (e.g. bin centres of the per-stamp width jitter).
        n_angles: number of rotation steps over 360 degrees.
        min_value: texture values below this count as transparent when cropping.
        tone: optional (k,) lookup applied to every rendered stamp value (texel value ``i / (k - 1)``
            becomes ``tone[i]``, linear in between), e.g. :func:`quantization_tone`.
    """

    def __init__(
        self,
        texture: np.ndarray,
        widths: tuple[float, ...],
        scales: tuple[float, ...],
        n_angles: int,
        min_value: float = 1.0 / 255,
        tone: np.ndarray | None = None,
    ) -> None:
        self.widths, self.scales, self.n_angles = tuple(widths), tuple(scales), int(n_angles)
        th, tw = texture.shape
        half = self.n_angles // 2 if self.n_angles % 2 == 0 else 0
        self.patches: list[np.ndarray] = []
        centres = []
        for width in self.widths:
            for scale in self.scales:
                pw = max(2, int(round(width * scale)))
                ph = max(2, int(round(pw * th / tw)))
                patch = resize(texture, (ph, pw), order=1, anti_aliasing=pw < tw, mode="constant").astype(np.float32)
                first = len(self.patches)
                for a in range(self.n_angles):
                    if half and a >= half:
                        flipped = np.ascontiguousarray(self.patches[first + a - half][::-1, ::-1])  # faster to add
                        cy, cx = centres[first + a - half]
                        self.patches.append(flipped)
                        centres.append((flipped.shape[0] - 1 - cy, flipped.shape[1] - 1 - cx))
                        continue
                    rot = ndi.rotate(patch, 360.0 * a / self.n_angles, reshape=True, order=1, mode="constant")
                    if tone is not None:
                        rot = np.interp(rot, np.linspace(0.0, 1.0, len(tone)), tone).astype(np.float32)
                    rows, cols = np.nonzero(rot >= min_value)
                    if rows.size == 0:  # a texture too faint to survive resampling: a single faint texel
                        rows, cols = np.array([rot.shape[0] // 2]), np.array([rot.shape[1] // 2])
                    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
                    self.patches.append(np.ascontiguousarray(rot[r0:r1, c0:c1], dtype=np.float32))
                    centres.append(((rot.shape[0] - 1) // 2 - r0, (rot.shape[1] - 1) // 2 - c0))
        self.centres = np.asarray(centres, dtype=np.int64)
        self.shapes = np.asarray([p.shape for p in self.patches], dtype=np.int64)
        # stamps go into a canvas padded by the largest stamp reach, so they may hang over the image border
        self.pad = int(max(self.centres.max(), (self.shapes - self.centres).max())) + 1

    def variant(self, brush: np.ndarray, scale: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """Flat variant indices for integer brush, scale-bin and angle-bin indices."""
        return (brush * len(self.scales) + scale) * self.n_angles + angle

    def paint(
        self, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, variant: np.ndarray, opacity: np.ndarray
    ) -> np.ndarray:
        """Composite stamps of one colour with alpha 'over' and return the coverage (alpha) map.

        A stamp with opacity ``a`` covers texel value ``t`` with alpha ``1 - (1 - a)^t`` (= ``a`` at
        ``t = 1``, within 10 % of ``a * t`` elsewhere for ``a < 0.3``). 'Over' then leaves
        ``prod (1 - a_i)^t_i`` uncovered, so summing ``-log(1 - a_i) * t_i`` into one canvas by array
        slicing gives the exact composite in any stamp order.

        Args:
            shape: (H, W) of the image painted.
            rows, cols: (n,) integer stamp centres in image pixels (inside the image).
            variant: (n,) variant index of each stamp (see :meth:`variant`).
            opacity: (n,) stamp opacity in [0, 1).

        Returns:
            (H, W) float32 alpha in [0, 1).
        """
        h, w = shape
        canvas = np.zeros((h + 2 * self.pad, w + 2 * self.pad), np.float32)
        variant = np.asarray(variant, np.int64)
        top = np.asarray(rows, np.int64) + self.pad - self.centres[variant, 0]
        left = np.asarray(cols, np.int64) + self.pad - self.centres[variant, 1]
        bottom, right = top + self.shapes[variant, 0], left + self.shapes[variant, 1]
        weight = -np.log1p(-np.asarray(opacity, np.float64))
        patches, multiply, add = self.patches, np.multiply, np.add
        boxes = zip(
            variant.tolist(), top.tolist(), bottom.tolist(), left.tolist(), right.tolist(), weight.tolist(), strict=True
        )
        for v, y, y2, x, x2, wt in boxes:
            view = canvas[y:y2, x:x2]
            add(view, multiply(patches[v], wt), out=view)  # no write-back of the view, unlike `canvas[...] +=`
        inner = canvas[self.pad : self.pad + h, self.pad : self.pad + w]
        return -np.expm1(-inner)


_BANKS: OrderedDict = OrderedDict()
_BANKS_LOCK = threading.Lock()  # ThreadDataLoader workers share the cache


def quantization_tone(
    opacity_range: tuple[float, float], flow_range: tuple[float, float], levels: int = 255, n: int = 256
) -> np.ndarray:
    """Texel tone curve that makes a :class:`StampBank` stamp deposit what a published stamp deposits, on average.

    A published stamp of opacity ``a`` (opacity x flow) covers texel ``t`` with alpha ``a * t``, and
    with 8-bit alphas it truncates: ``int(levels * t * a) / levels``, so faint texels vanish (below
    ``1 / a`` levels) and every texel loses half a level on average. :meth:`StampBank.paint` covers
    texel ``t'`` with ``1 - (1 - a)^t'`` (exact 'over' in log space), which is up to ~20 % more than
    ``a * t'`` for faint texels. The curve maps ``t`` to the ``t'`` whose mean coverage over the opacity
    distribution equals the mean published coverage.

    Args:
        opacity_range, flow_range: the uniform ranges whose product is the stamp opacity.
        levels: alpha levels of the published format (255 for 8 bit; 0: exact ``a * t``).
        n: entries of the lookup (texel values ``i / (n - 1)``).

    Returns:
        (n,) float32 increasing curve, 0 at 0.
    """
    q = (np.arange(64) + 0.5) / 64  # midpoint quantiles of both uniform draws
    a = (opacity_range[0] + q[:, None] * (opacity_range[1] - opacity_range[0])) * (
        flow_range[0] + q[None, :] * (flow_range[1] - flow_range[0])
    )
    a = np.clip(a.ravel(), 0.0, 1.0 - 1e-6)
    t = np.linspace(0.0, 1.0, n)
    if levels:
        p = np.rint(t * levels)  # the texture as 8-bit alpha
        target = np.floor(p[:, None] * a[None, :] + 1e-9).mean(1) / levels
    else:
        target = t * a.mean()
    grid = np.linspace(0.0, 1.5, 3001)
    coverage = (1.0 - (1.0 - a[None, :]) ** grid[:, None]).mean(1)  # increasing in t'
    return np.interp(target, coverage, grid).astype(np.float32)


def stamp_bank(
    texture: np.ndarray, texture_key, widths, scales, n_angles: int, tone: np.ndarray | None = None, tone_key=None
) -> StampBank:
    """A cached :class:`StampBank` (a few recent ones per process; building one takes ~0.1 s at 256 px).

    ``texture_key`` identifies the texture (e.g. its seed or file name) so it need not be hashed;
    ``tone_key`` likewise identifies ``tone``.
    """
    key = (
        texture_key,
        tuple(round(float(w), 3) for w in widths),
        tuple(round(float(s), 4) for s in scales),
        n_angles,
        tone_key,
    )
    with _BANKS_LOCK:
        bank = _BANKS.get(key)
        if bank is None:
            bank = StampBank(texture, widths, scales, n_angles, tone=tone)
            _BANKS[key] = bank
            while len(_BANKS) > 10:
                _BANKS.popitem(last=False)
        else:
            _BANKS.move_to_end(key)
        return bank
