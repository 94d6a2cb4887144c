"""QA montages of the offline jobs: sampled images with the contours of their label maps or masks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bundle.io import save_rgb_png

__all__ = ["records_montage", "contour_montage"]

logger = logging.getLogger(__name__)

_COLOURS = np.array([[0, 0, 0], [255, 140, 0], [0, 200, 255], [120, 255, 60], [255, 60, 200]], np.uint8)


def records_montage(
    records: Sequence[dict],
    tile: Callable[[dict], tuple[np.ndarray, np.ndarray, bool]],
    path: str | os.PathLike,
    count: int,
) -> Path | None:
    """Write a QA montage (:func:`contour_montage`) of up to ``count`` evenly spaced finished job records.

    Args:
        records: the job's merged records; failed ones (and ones without outputs) are left out.
        tile: maps a record to ``(image, labels, highlight)`` for :func:`contour_montage`.
        path: the PNG to write (atomically).
        count: how many records to show at most; 0 writes nothing.

    Returns:
        The path, or None when there is nothing to draw.
    """
    ok = [r for r in records if r["status"] != "failed" and r["outputs"]]
    if not ok or count <= 0:
        return None
    tiles = []
    for i in np.unique(np.linspace(0, len(ok) - 1, min(count, len(ok))).astype(int)):
        try:
            tiles.append(tile(ok[i]))
        except Exception as e:  # the montage is a convenience: never fail the job for it
            logger.warning("QA montage skips %s: %s", ok[i]["source"], e)
    return contour_montage(tiles, path)


def contour_montage(
    tiles: Sequence[tuple[np.ndarray, np.ndarray, bool]],
    path: str | os.PathLike,
    tile_size: int = 192,
    columns: int = 4,
) -> Path | None:
    """Write a QA montage PNG: images with the contours of their label maps, one colour per label.

    Args:
        tiles: ``(image, labels, highlight)`` with ``image`` (H, W) in [0, 1], ``labels`` (H, W) integer
            (label 1 orange, 2 cyan, 3 green, 4 magenta) and ``highlight`` drawing a red frame (e.g. no lung found).
        path: the PNG to write (atomically).
        tile_size: side of each square tile in pixels (images are resized with nearest neighbour, letterboxed).
        columns: tiles per row.

    Returns:
        The path, or None when there is nothing to draw.
    """
    if not tiles:
        return None
    rows = (len(tiles) + columns - 1) // columns
    canvas = np.zeros((rows * tile_size, columns * tile_size, 3), np.uint8)
    for i, (image, labels, highlight) in enumerate(tiles):
        h, w = image.shape
        s = tile_size / max(h, w)
        th, tw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        ri = np.minimum((np.arange(th) / s).astype(int), h - 1)
        ci = np.minimum((np.arange(tw) / s).astype(int), w - 1)
        img = np.clip(image[np.ix_(ri, ci)] * 255, 0, 255).astype(np.uint8)
        lab = np.asarray(labels)[np.ix_(ri, ci)]
        rgb = np.repeat(img[..., None], 3, axis=2)
        edge = np.zeros(lab.shape, bool)  # a pixel whose right or lower neighbour has another label
        edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[1:, :] |= lab[1:, :] != lab[:-1, :]
        edge &= lab > 0
        rgb[edge] = _COLOURS[np.clip(lab[edge], 0, len(_COLOURS) - 1)]
        if highlight:
            rgb[:2], rgb[-2:], rgb[:, :2], rgb[:, -2:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
        r0 = (i // columns) * tile_size + (tile_size - th) // 2
        c0 = (i % columns) * tile_size + (tile_size - tw) // 2
        canvas[r0 : r0 + th, c0 : c0 + tw] = rgb
    return save_rgb_png(path, canvas)
