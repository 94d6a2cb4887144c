"""Brush textures and vectorised stamping for the ART-ASyn texture anomaly synthesis.

The published pipeline paints with a small streaky grey texture (bright, roughly parallel wisps on
black, about 170x110 px) used as an alpha stamp. This module makes such a texture procedurally (or
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

__all__ = ["procedural_brush", "load_brush", "StampBank", "stamp_bank"]

# (height, width) of the published brush texture
BRUSH_SHAPE = (110, 170)


def procedural_brush(shape: tuple[int, int] = BRUSH_SHAPE, seed: int = 0, n_wisps: int = 36) -> np.ndarray:
    """Make a streaky brush texture: bright, roughly parallel, wavy wisps on black.

    Args:
        shape: (height, width) of the texture in pixels; the wisps run along the width.
        seed: seed of the texture's own generator (the texture is a fixed asset, not a per-call draw).
        n_wisps: number of wisps.

    Returns:
        (height, width) float32 texture in [0, 1] with maximum 1, fading to 0 towards its border.
    """
    rng = np.random.RandomState(seed)
    h, w = shape
    v = np.linspace(0.0, 1.0, h, dtype=np.float64)[None, :, None]
    u = np.linspace(0.0, 1.0, w, dtype=np.float64)[None, None, :]
    k = (n_wisps, 1, 1)
    y0 = rng.uniform(0.12, 0.88, k)
    centre = (
        y0
        + rng.normal(0.0, 0.06, k) * (u - 0.5)
        + rng.uniform(0.01, 0.05, k) * np.sin(2 * np.pi * rng.uniform(0.4, 1.6, k) * u + rng.uniform(0, 2 * np.pi, k))
    )
    thickness = rng.uniform(0.004, 0.016, k)
    # each wisp covers a random stretch of the width, with soft ends
    start = rng.uniform(-0.2, 0.5, k)
    stop = start + rng.uniform(0.4, 1.0, k)
    along = np.clip(np.sin(np.pi * np.clip((u - start) / (stop - start), 0.0, 1.0)), 0.0, 1.0) ** 0.5
    strength = rng.uniform(0.15, 1.0, k) ** 2
    tex = (strength * along * np.exp(-0.5 * ((v - centre) / thickness) ** 2)).sum(0)
    # slow brightness variation along the streaks, then an elliptical fade so stamps have no edges
    noise = ndi.gaussian_filter(rng.rand(h, w), (h / 30, w / 10), mode="wrap")
    noise = (noise - noise.min()) / max(np.ptp(noise), 1e-12)
    tex *= noise**1.5
    r2 = ((v[0] - 0.5) / 0.5) ** 2 + ((u[0] - 0.5) / 0.5) ** 2
    tex *= np.clip(1.0 - r2, 0.0, 1.0) ** 0.6
    tex = np.clip(tex / tex.max(), 0.0, 1.0)
    return tex.astype(np.float32)


def load_brush(path: str | Path) -> np.ndarray:
    """Read a user brush texture (any format the bundle reads; bright = paint) as float32 (H, W) in [0, 1]."""
    from bundle.io import read_image  # lazy: keeps the synthesis importable on its own

    tex, _ = read_image(str(path))
    tex = np.asarray(tex, dtype=np.float32)
    if tex.ndim != 2 or min(tex.shape) < 4 or not tex.max() > 0:
        raise ValueError(f"brush texture {path}: need a non-black 2D grey image of at least 4x4 px, got shape {tex.shape}")
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
    """

    def __init__(
        self,
        texture: np.ndarray,
        widths: tuple[float, ...],
        scales: tuple[float, ...],
        n_angles: int,
        min_value: float = 1.0 / 255,
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
                        flipped = self.patches[first + a - half][::-1, ::-1]
                        cy, cx = centres[first + a - half]
                        self.patches.append(flipped)
                        centres.append((flipped.shape[0] - 1 - cy, flipped.shape[1] - 1 - cx))
                        continue
                    rot = ndi.rotate(patch, 360.0 * a / self.n_angles, reshape=True, order=1, mode="constant")
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
        patches = self.patches
        boxes = zip(variant.tolist(), top.tolist(), bottom.tolist(), left.tolist(), right.tolist(), weight.tolist())
        for v, y, y2, x, x2, wt in boxes:
            canvas[y:y2, x:x2] += patches[v] * wt
        inner = canvas[self.pad : self.pad + h, self.pad : self.pad + w]
        return -np.expm1(-inner)


_BANKS: OrderedDict = OrderedDict()
_BANKS_LOCK = threading.Lock()  # ThreadDataLoader workers share the cache


def stamp_bank(texture: np.ndarray, texture_key, widths, scales, n_angles: int) -> StampBank:
    """A cached :class:`StampBank` (a few recent ones per process; building one takes ~0.1 s at 256 px).

    ``texture_key`` identifies the texture (e.g. its seed or file name) so it need not be hashed.
    """
    key = (texture_key, tuple(round(float(w), 3) for w in widths), tuple(round(float(s), 4) for s in scales), n_angles)
    with _BANKS_LOCK:
        bank = _BANKS.get(key)
        if bank is None:
            bank = StampBank(texture, widths, scales, n_angles)
            _BANKS[key] = bank
            while len(_BANKS) > 10:
                _BANKS.popitem(last=False)
        else:
            _BANKS.move_to_end(key)
        return bank
