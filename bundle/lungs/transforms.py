"""PBTSeg as MONAI transforms: :class:`PBTSeg` on an image, :class:`PBTSegd` on a dictionary (with the lung cache)."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from bundle.keys import Keys
from bundle.lungs.cache import cached_lung_map
from bundle.lungs.pbtseg import PBTSegParams, pbtseg

__all__ = ["PBTSeg", "PBTSegd"]

logger = logging.getLogger(__name__)


class PBTSeg(Transform):
    """Lung label map of a chest X-ray by progressive binary thresholding (see :func:`~bundle.lungs.pbtseg.pbtseg`).

    Args:
        params: a :class:`PBTSegParams` (defaults documented there); keyword arguments override single fields.

    Call with a channel-first (1, H, W) numpy array or torch tensor (also MetaTensor) of any numeric dtype and
    intensity range; returns a (1, H, W) uint8 label map of the same family (numpy in, numpy out; tensor in,
    tensor out on the same device): 0 background, 1 lung on the image's left, 2 lung on the image's right.
    An image without lungs gives zeros (the reason is in :func:`~bundle.lungs.pbtseg.pbtseg`'s info dict).
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, params: PBTSegParams | None = None, **kwargs: Any) -> None:
        p = params or PBTSegParams()
        self.params = PBTSegParams(**{**asdict(p), **kwargs}) if kwargs else p

    def __call__(self, img: Any) -> Any:  # type: ignore[override]
        labels, _ = pbtseg(img, self.params)
        return _like(img, labels[None])


def _like(img: Any, labels: np.ndarray) -> Any:
    """Wrap a (1, H, W) uint8 label map in the family of ``img`` (MetaTensor keeps a copy of its metadata)."""
    if isinstance(img, MetaTensor):
        return MetaTensor(
            torch.from_numpy(labels).to(img.device),
            meta=deepcopy(img.meta),
            applied_operations=deepcopy(img.applied_operations),
        )
    if isinstance(img, torch.Tensor):
        return torch.from_numpy(labels).to(img.device)
    return labels


def _source_path(data: Mapping, key: Hashable) -> str | None:
    """The file an item was loaded from, from the MetaTensor meta or a ``<key>_meta_dict``."""
    img = data[key]
    meta = img.meta if isinstance(img, MetaTensor) else data.get(f"{key}_meta_dict", {})
    path = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if isinstance(path, (list, tuple)):
        path = path[0] if path else None
    return str(path) if path else None


def _as_numpy_labels(lung: Any) -> np.ndarray:
    return lung.detach().cpu().numpy() if isinstance(lung, torch.Tensor) else np.asarray(lung)


class PBTSegd(MapTransform):
    """Dictionary form of :class:`PBTSeg`: reads the image, writes its lung label map and records what was found.

    Args:
        keys: the image key (one key; the lung map is computed from it).
        lung_key: key the (1, H, W) uint8 label map is written to.
        cache_dir: optional lung cache (e.g. ``<dataset_dir>/lungs``, as written by ``monai.bundle run lungs``).
            When ``<cache_dir>/<path relative to dataset_dir>.png`` exists and has the image's size, and the
            cache's ``pbtseg_stamp.json`` is of this PBTSeg with these ``params``, it is used, otherwise the map is
            computed (a cache of another PBTSeg version is reported once and not used). Both give the same map
            because the cache is computed by the same code on the image as loaded (apply this transform before any
            resizing).
        dataset_dir: root the cache mirrors; required with ``cache_dir``.
        params: :class:`PBTSegParams` for computing; keyword arguments override single fields.
        allow_missing_keys: don't raise when the image key is missing.

    Metadata: ``lung_left_found``, ``lung_right_found``, ``lung_found`` (bools) and ``lung_source``
    (``"cache"`` or ``"computed"``) go into the lung MetaTensor's ``meta`` when the image is a MetaTensor, else
    into ``data["<lung_key>_meta_dict"]``. A warning naming the file is logged once per image without a lung.
    """

    backend = PBTSeg.backend

    def __init__(
        self,
        keys: KeysCollection = Keys.IMAGE,
        lung_key: str = Keys.LUNG,
        cache_dir: str | os.PathLike | None = None,
        dataset_dir: str | os.PathLike | None = None,
        params: PBTSegParams | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"PBTSegd takes exactly one image key, got {self.keys}.")
        if cache_dir and not dataset_dir:
            raise ValueError("PBTSegd: cache_dir needs dataset_dir (the folder the cache mirrors).")
        self.lung_key = lung_key
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.dataset_dir = str(dataset_dir) if dataset_dir else None
        self.segment = PBTSeg(params, **kwargs)

    def _from_cache(self, path: str | None, shape: Sequence[int]) -> np.ndarray | None:
        if not self.cache_dir or not path:
            return None
        return cached_lung_map(path, shape, self.dataset_dir, self.cache_dir, self.segment.params)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            path = _source_path(d, key)
            cached = self._from_cache(path, tuple(img.shape[-2:]))
            if cached is None:
                lung, source = self.segment(img), "computed"
            else:
                lung, source = _like(img, cached[None]), "cache"
            labels2d = _as_numpy_labels(lung)
            present = np.unique(labels2d)
            found = {
                "lung_left_found": bool((present == 1).any()),
                "lung_right_found": bool((present == 2).any()),
            }
            found["lung_found"] = found["lung_left_found"] or found["lung_right_found"]
            found["lung_source"] = source
            if not found["lung_found"]:
                logger.warning("PBTSeg found no lung in %s (%s).", path or "an unnamed image", source)
            if isinstance(lung, MetaTensor):
                lung.meta.update(found)
            else:
                d[f"{self.lung_key}_meta_dict"] = {**d.get(f"{self.lung_key}_meta_dict", {}), **found}
            d[self.lung_key] = lung
        return d
