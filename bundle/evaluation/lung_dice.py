"""Lung label maps against true ones: per-lung Dice by zone, and true maps from hand-drawn lung masks.

One place for what ``benchmarks/bench_pbtseg.py`` (phantoms), ``benchmarks/bench_pbtseg_masks.py`` (real radiographs
with readers' lung masks), ``benchmarks/demo_lung_maps.py`` and the PBTSeg tests measure, so that their figures are
the same quantity (built on :func:`bundle.evaluation.metrics.dice`; it lives in ``evaluation`` because the early
stages import no later one).

Label contract (as :func:`bundle.lungs.pbtseg.pbtseg`): 1 is the lung on the image's left (the patient's right on
a standard frontal film), 2 the lung on the image's right.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bundle.evaluation.metrics import dice

__all__ = ["ZONES", "SWAP_DICE", "zone_dice", "labels_swapped", "dice_table", "truth_from_mask", "truth_from_pair"]

#: the columns of :func:`zone_dice`: the whole lung, then the upper / middle / lower third of the true lung's rows
ZONES = ("whole", "upper", "middle", "lower")
#: a map's lung overlapping the other true lung by more than this Dice counts as a label swap
SWAP_DICE = 0.3


def zone_dice(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-lung Dice of a label map against the true one, for the whole lung and each third of its rows.

    Args:
        labels: (H, W) label map (0 background, 1 and 2 the lungs).
        truth: (H, W) true label map, same contract.

    Returns:
        (2, 4) float array: row ``k - 1`` is lung ``k``; columns as :data:`ZONES`. The thirds split the rows of
        the true lung; a lung absent from ``truth`` gives a row of NaN (nothing to score it against).

    Raises:
        ValueError: the two maps differ in shape.
    """
    if labels.shape != truth.shape:
        raise ValueError(f"label map {labels.shape} and true map {truth.shape} differ in shape")
    out = np.full((2, len(ZONES)), np.nan)
    for k in (1, 2):
        t, p = truth == k, labels == k
        rows = np.flatnonzero(t.any(axis=1))
        if rows.size == 0:
            continue
        cut = np.linspace(rows[0], rows[-1] + 1, 4).round().astype(int)
        out[k - 1, 0] = dice(p, t)
        for i in range(3):
            out[k - 1, i + 1] = dice(p[cut[i] : cut[i + 1]], t[cut[i] : cut[i + 1]])
    return out


def labels_swapped(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Whether a map's lung 1 lies on the true lung 2 or its lung 2 on the true lung 1 (Dice above
    :data:`SWAP_DICE`)."""
    return dice(labels == 1, truth == 2) > SWAP_DICE or dice(labels == 2, truth == 1) > SWAP_DICE


def dice_table(rows: dict[str, np.ndarray], below: float = 0.85) -> list[str]:
    """Lines of the Dice table that the PBTSeg benchmarks print: median, mean and worst per group and zone.

    Args:
        rows: group name (e.g. ``healthy``) -> (N, 4) per-lung rows of :func:`zone_dice` (NaN rows are left out).
        below: the last line counts each group's lungs with whole-lung Dice below this.

    Returns:
        The table's lines (header, three per group, the count line).
    """
    lines = [f"{'':<10} {'stat':<7} " + " ".join(f"{z:>7}" for z in ZONES)]
    counts = []
    for group, d in rows.items():
        d = np.asarray(d, dtype=np.float64).reshape(-1, len(ZONES))
        d = d[~np.isnan(d[:, 0])]
        counts.append(f"{group} {int((d[:, 0] < below).sum())} of {len(d)}")
        if len(d) == 0:
            lines.append(f"{group:<10} (no lung scored)")
            continue
        for stat, fn in (("median", np.nanmedian), ("mean", np.nanmean), ("worst", np.nanmin)):
            lines.append(f"{group:<10} {stat:<7} " + " ".join(f"{x:>7.3f}" for x in fn(d, axis=0)))
    if len(counts) == 1:
        counts = [counts[0].split(" ", 1)[1]]  # one group: its name is already in every row
    lines.append(f"lungs with whole-lung Dice below {below:g}: " + ", ".join(counts))
    return lines


def _by_side(mask: np.ndarray) -> np.ndarray:
    """A binary mask of both lungs -> label map: each 8-connected piece goes to the side of its centroid (1: the
    image's left half); a piece that crosses the image's middle column is cut there."""
    h, w = mask.shape
    out = np.zeros(mask.shape, np.uint8)
    pieces, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return out
    cols = ndimage.center_of_mass(mask, pieces, index=np.arange(1, n + 1))
    side = np.array([0] + [1 if c < 0.5 * w else 2 for _, c in cols], np.uint8)
    out[:] = side[pieces]
    in_left, in_right = np.zeros(n + 1, bool), np.zeros(n + 1, bool)
    in_left[np.unique(pieces[:, : w // 2])] = True
    in_right[np.unique(pieces[:, w // 2 :])] = True
    cross = in_left & in_right
    cross[0] = False
    if cross.any():  # lungs drawn touching: split at the middle column
        joined = cross[pieces]
        left = np.zeros(mask.shape, bool)
        left[:, : w // 2] = True
        out[joined & left] = 1
        out[joined & ~left] = 2
    return out


def truth_from_mask(mask: np.ndarray) -> np.ndarray:
    """A true label map from one hand-drawn mask per image.

    A mask holding only the values 0, 1 and 2 with both 1 and 2 present is taken as a label map in the bundle's
    contract (1 = the lung on the image's left). Any other mask (0 / 255, 0 / 1, ...) is a binary mask of both
    lungs (non-zero = lung), split into the two sides by :func:`_by_side`: the Shenzhen set's masks, for example.

    Args:
        mask: (H, W) integer mask.

    Returns:
        (H, W) uint8 label map.
    """
    values = np.unique(mask)
    if set(values.tolist()) == {0, 1, 2}:
        return mask.astype(np.uint8)
    return _by_side(mask != 0)


def truth_from_pair(image_left: np.ndarray, image_right: np.ndarray) -> np.ndarray:
    """A true label map from one mask per lung (non-zero = lung), as the Montgomery set ships them: its
    ``rightMask`` (the patient's right lung) is the image's left lung on a frontal film, so it is ``image_left``.

    Args:
        image_left: (H, W) mask of the lung on the image's left (label 1).
        image_right: (H, W) mask of the lung on the image's right (label 2).

    Returns:
        (H, W) uint8 label map; where the two masks overlap the pixel stays label 1.

    Raises:
        ValueError: the two masks differ in shape.
    """
    if image_left.shape != image_right.shape:
        raise ValueError(f"the two lung masks differ in shape: {image_left.shape} and {image_right.shape}")
    out = np.zeros(image_left.shape, np.uint8)
    out[image_right != 0] = 2
    out[image_left != 0] = 1
    return out
