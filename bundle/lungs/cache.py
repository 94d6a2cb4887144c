"""The lung-map cache written by ``monai.bundle run lungs`` and read by :class:`~bundle.lungs.transforms.PBTSegd`.

Entries mirror the dataset: ``<cache_dir>/<relative folder>/<stem>.png``, lossless uint8 label maps computed by
the same code on the image as loaded, so a cached map equals a computed one. That holds only for the PBTSeg that
wrote them: ``<cache_dir>/pbtseg_stamp.json`` records its fingerprint (:func:`pbtseg_fingerprint`), and a cache
whose stamp is missing or differs from the reader's PBTSeg is not used (its maps would silently differ from the
ones computed online after an update of PBTSeg or of its parameters).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bundle.data.layout import derived_path
from bundle.data.phantoms import make_phantom
from bundle.io import atomic_write, read_labels
from bundle.lungs.pbtseg import PBTSegParams, pbtseg

__all__ = ["STAMP_NAME", "lung_cache_path", "cached_lung_map", "pbtseg_fingerprint", "write_stamp", "stamp_matches"]

logger = logging.getLogger(__name__)

#: the file in a lung cache's root that records which PBTSeg wrote the cache
STAMP_NAME = "pbtseg_stamp.json"
#: the fixed phantoms whose maps go into the fingerprint: (seed, diseased) at 256 px
_FINGERPRINT_PHANTOMS = ((0, False), (1, True), (2, True), (3, True))

_fingerprints: dict[str, str] = {}  # parameters (JSON) -> fingerprint, computed once per process
_current: set[tuple[str, str]] = set()  # (cache folder, fingerprint) whose stamp matched: not read again
_warned: set[tuple[str, str]] = set()  # stale caches already reported


def _params_key(params: PBTSegParams | None) -> str:
    return json.dumps(asdict(params or PBTSegParams()), sort_keys=True, default=list)


def pbtseg_fingerprint(params: PBTSegParams | None = None) -> str:
    """A short hash of what PBTSeg makes with ``params`` (default parameters when None): the parameters and the
    label maps of four fixed phantoms (256 px, healthy and diseased). A code change that changes maps changes it
    on these phantoms too as a rule (issue 10's steps changed most of them), so a cache written by another PBTSeg is
    recognised without a version number to bump by hand; a change that leaves all four maps alone is not seen.
    About 0.3 s, once per process and parameter set."""
    key = _params_key(params)
    if key not in _fingerprints:
        h = hashlib.sha256(key.encode())
        for seed, diseased in _FINGERPRINT_PHANTOMS:
            h.update(pbtseg(make_phantom(256, seed=seed, diseased=diseased).image, params)[0].tobytes())
        _fingerprints[key] = h.hexdigest()[:16]
    return _fingerprints[key]


def write_stamp(cache_dir: str | os.PathLike, params: PBTSegParams | None = None) -> Path:
    """Record in ``<cache_dir>/pbtseg_stamp.json`` that the maps under ``cache_dir`` are made by this PBTSeg with
    ``params`` (written atomically). Returns the stamp's path."""
    path = Path(cache_dir) / STAMP_NAME
    stamp = {"fingerprint": pbtseg_fingerprint(params), "params": json.loads(_params_key(params))}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(stamp, indent=2) + "\n")
    _current.add((str(Path(cache_dir)), stamp["fingerprint"]))
    return path


def stamp_matches(cache_dir: str | os.PathLike, params: PBTSegParams | None = None) -> bool:
    """Whether ``cache_dir`` holds a stamp of this PBTSeg with ``params`` (False when it is missing, unreadable or
    of another fingerprint)."""
    try:
        stamp = json.loads((Path(cache_dir) / STAMP_NAME).read_text())
        return isinstance(stamp, dict) and stamp.get("fingerprint") == pbtseg_fingerprint(params)
    except (OSError, ValueError):
        return False


def _is_current(cache_dir: str | os.PathLike, params: PBTSegParams | None) -> bool:
    """:func:`stamp_matches`, remembered once true (a stale cache is read again at every call, so that a cache
    rebuilt while a process runs is used from then on); a stale cache is reported once per process."""
    key = (str(Path(cache_dir)), pbtseg_fingerprint(params))
    if key in _current:
        return True
    if stamp_matches(cache_dir, params):
        _current.add(key)
        return True
    if key not in _warned:
        _warned.add(key)
        logger.warning(
            "Lung cache %s has no %s of this PBTSeg (written by another version or with other parameters, or "
            "before caches were stamped): its maps are not used, lung maps are computed instead. Rebuild it with "
            "`python -m monai.bundle run lungs --config_file configs/preprocess.json --dataset_dir <dataset> "
            "--overwrite true`.",
            cache_dir,
            STAMP_NAME,
        )
    return False


def lung_cache_path(
    image_path: str | os.PathLike, dataset_dir: str | os.PathLike, cache_dir: str | os.PathLike
) -> Path:
    """Where the lung map of ``image_path`` lives in a lung cache: ``<cache_dir>/<relative folder>/<stem>.png``
    (see :func:`bundle.data.layout.derived_path`). Raises ``ValueError`` when the image is not under
    ``dataset_dir``."""
    return derived_path(image_path, dataset_dir, cache_dir)


def cached_lung_map(
    image_path: str | os.PathLike,
    shape: Sequence[int],
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    params: PBTSegParams | None = None,
) -> np.ndarray | None:
    """The lung map of ``image_path`` from a lung cache (:func:`lung_cache_path`), or None to compute it instead.

    Args:
        image_path: the image file.
        shape: the image's (H, W); a cached map of another size or with values above 2 is not used.
        dataset_dir: the folder the cache mirrors.
        cache_dir: the cache folder.
        params: the PBTSeg parameters the map would otherwise be computed with (default ones when None): the
            cache is used only when its stamp is of this PBTSeg with these parameters (:func:`stamp_matches`).

    Returns:
        (H, W) uint8 label map, or None when there is no usable entry (a cache of another PBTSeg, missing,
        unreadable, wrong size: logged).
    """
    try:
        cached = lung_cache_path(image_path, dataset_dir, cache_dir)
    except ValueError:
        return None
    # the stamp only when there is a map to use: a cache folder that does not exist (online maps) is not stale
    if not cached.is_file() or not _is_current(cache_dir, params):
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
