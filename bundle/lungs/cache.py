"""The lung-map cache written by ``monai.bundle run lungs`` and read by :class:`~bundle.lungs.transforms.PBTSegd`.

Entries mirror the dataset: ``<cache_dir>/<relative folder>/<stem>.png``, lossless uint8 label maps computed by
the same code on the image as loaded, so a cached map equals a computed one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bundle.data.layout import derived_path
from bundle.io import read_labels

__all__ = ["lung_cache_path", "cached_lung_map"]

logger = logging.getLogger(__name__)


def lung_cache_path(
    image_path: str | os.PathLike, dataset_dir: str | os.PathLike, cache_dir: str | os.PathLike
) -> Path:
    """Where the lung map of ``image_path`` lives in a lung cache: ``<cache_dir>/<relative folder>/<stem>.png``
    (see :func:`bundle.data.layout.derived_path`). Raises ``ValueError`` when the image is not under
    ``dataset_dir``."""
    return derived_path(image_path, dataset_dir, cache_dir)


def cached_lung_map(
    image_path: str | os.PathLike, shape: Sequence[int], dataset_dir: str | os.PathLike, cache_dir: str | os.PathLike
) -> np.ndarray | None:
    """The lung map of ``image_path`` from a lung cache (:func:`lung_cache_path`), or None to compute it instead.

    Args:
        image_path: the image file.
        shape: the image's (H, W); a cached map of another size or with values above 2 is not used.
        dataset_dir: the folder the cache mirrors.
        cache_dir: the cache folder.

    Returns:
        (H, W) uint8 label map, or None when there is no usable entry (missing, unreadable, wrong size: logged).
    """
    try:
        cached = lung_cache_path(image_path, dataset_dir, cache_dir)
    except ValueError:
        return None
    if not cached.is_file():
        return None
    try:
        labels = np.asarray(read_labels(cached))
    except Exception as e:  # a damaged cache entry must not stop a job: recompute
        logger.warning("Lung cache %s unreadable (%s); computing the lung map instead.", cached, e)
        return None
    if labels.shape != tuple(shape) or labels.max(initial=0) > 2:
        logger.warning(
            "Lung cache %s has shape %s / values up to %s, image %s is %s; computing instead.",
            cached,
            labels.shape,
            labels.max(initial=0),
            image_path,
            tuple(shape),
        )
        return None
    return labels.astype(np.uint8)
