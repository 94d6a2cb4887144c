"""Which images train and validate, and the offline-variant batches (the ``synthesis: offline`` switch).

Training batches always pair each healthy image with its anomalous variants (healthy copy first, target =
the healthy image for all): online, ``RandTextureAnomalyd(num_variants=(1, 3), include_healthy=True)`` makes
them; offline, :class:`OfflineVariantsd` reads the variants written by
``python -m monai.bundle run synthesize --config_file configs/preprocess.json`` (see
:mod:`bundle.preprocess.anomalies`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle.data.datalist import build_datalist, split_train_val
from bundle.io import read_image, read_labels
from bundle.keys import Keys
from bundle.preprocess.anomalies import offline_variant_datalist

__all__ = ["image_label", "training_split", "group_offline_variants", "OfflineVariantsd"]

logger = logging.getLogger(__name__)

SYNTHESIS_MODES = ("online", "offline")


def image_label(entry: Mapping[str, Any]) -> int | None:
    """The entry's image-level label 0/1, or None when it has none (e.g. MONAI Label's segmentation file)."""
    value = entry.get("label")
    if isinstance(value, (bool, int, np.integer)) or (isinstance(value, float) and value in (0.0, 1.0)):
        return int(value)
    return None


def training_split(
    dataset_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    synthesis: str = "online",
    min_val: int = 2,
    hold_out: bool = False,
) -> dict[str, Any]:
    """Build the training and validation lists from a dataset folder, datalist JSON or CSV.

    Validation mode, chosen from the data and logged: ``real`` when the dataset's validation split holds healthy
    and diseased images; otherwise ``synthetic``: a seeded subset of ``val_fraction`` of the healthy training
    images is the validation monitor, each image used once as healthy (label 0) and once with one fixed, seeded
    ART-ASyn anomaly (label 1, ``synthetic_seed``). As published, every healthy image is trained on: the subset
    stays in training (the monitor then shows how well the synthetic anomalies are removed, not generalisation
    to unseen images) unless ``hold_out`` is set.

    Args:
        dataset_dir: anything :func:`bundle.data.build_datalist` accepts.
        val_fraction: share of the healthy training images used as the synthetic validation monitor.
        seed: seed of the held-out split and of the synthetic validation anomalies.
        synthesis: ``"online"`` or ``"offline"`` (training entries then carry their offline variants).
        min_val: minimum number of monitor images in synthetic mode.
        hold_out: remove the monitor images from training (default False: all healthy images train).

    Returns:
        ``{"training": [...], "validation": [...], "mode": "real" | "synthetic"}``.

    Raises:
        ValueError / FileNotFoundError / DatalistError: unset or missing ``dataset_dir``, no training images,
        unknown ``synthesis``, offline variants missing.
    """
    if synthesis not in SYNTHESIS_MODES:
        raise ValueError(f"synthesis must be one of {SYNTHESIS_MODES}, got {synthesis!r}.")
    if dataset_dir is None or not str(dataset_dir).strip():
        raise ValueError("dataset_dir is not set: pass --dataset_dir <folder | datalist.json | list.csv>.")
    if not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset_dir does not exist: {dataset_dir}")
    datalist = build_datalist(dataset_dir)
    training = list(datalist.get("training") or [])
    if not training:
        raise ValueError(f"no training images found in {dataset_dir} (expected e.g. <dataset_dir>/train/healthy/*).")
    validation = list(datalist.get("validation") or [])
    labels = [image_label(e) for e in validation]
    if 0 in labels and 1 in labels:
        val = [dict(e, label=image_label(e)) for e in validation if image_label(e) is not None]
        logger.info(
            "validation: the dataset's own validation split (%d healthy, %d diseased, %d with masks).",
            labels.count(0),
            labels.count(1),
            sum(1 for e in val if e["label"] == 1 and e.get("mask")),
        )
        mode = "real"
    else:
        n_val = max(min_val, int(math.ceil(val_fraction * len(training))))
        if hold_out and n_val >= len(training):
            raise ValueError(
                f"only {len(training)} training image(s) in {dataset_dir}: too few to hold out {n_val} for "
                "validation (add images, or a val/ folder with healthy and diseased images)."
            )
        n_val = min(n_val, len(training))
        if n_val < len(training):
            kept, held_out = split_train_val(training, val_fraction=n_val / len(training), seed=seed)
        else:  # one image (hold_out off): it is the monitor and trains too
            kept, held_out = [], list(training)
        if hold_out:
            training = kept
        val = []
        for i, entry in enumerate(held_out):
            val.append({"image": entry["image"], "label": 0})
            val.append({"image": entry["image"], "label": 1, "synthetic_seed": int(seed) * 100003 + i})
        logger.info(
            "validation: no diseased validation images in the dataset; monitoring on %d healthy training images "
            "and the same images with one fixed, seeded synthetic anomaly each (%s; %d training images).",
            len(held_out),
            "held out of training" if hold_out else "they stay in training",
            len(training),
        )
        mode = "synthetic"
    if synthesis == "offline":
        training = group_offline_variants(training, dataset_dir)
    return {"training": training, "validation": val, "mode": mode}


def group_offline_variants(entries: list[Mapping[str, Any]], dataset_dir: str | os.PathLike) -> list[dict]:
    """Attach to each healthy training entry its offline variants: ``variants`` and ``variant_masks`` (paths).

    Raises:
        FileNotFoundError: when no image has variants (the ``synthesize`` job has not been run).
    """
    flat = offline_variant_datalist(dataset_dir, entries)
    by_target: dict[str, list[tuple[str, str]]] = {}
    for e in flat:
        by_target.setdefault(os.path.abspath(e["target"]), []).append((e["image"], e["anomaly_mask"]))
    grouped, missing = [], 0
    for entry in entries:
        pairs = by_target.get(os.path.abspath(entry["image"]), [])
        missing += not pairs
        grouped.append(
            {"image": entry["image"], "variants": [v for v, _ in pairs], "variant_masks": [m for _, m in pairs]}
        )
    logger.info("offline synthesis: %d variants for %d training images.", len(flat), len(entries))
    if missing:
        logger.warning("offline synthesis: %d training images have no variants (they train as healthy only).", missing)
    return grouped


class OfflineVariantsd(MapTransform):
    """Expand one healthy entry into [healthy copy, variant 1, ..., variant K] samples from offline files.

    Each sample gets ``image`` (the variant, or the healthy copy), ``target`` (the healthy image) and
    ``anomaly_mask`` ((1, H, W) float32 0/1). Variants and masks are resized to the healthy image's (already
    resized) shape: area interpolation for images, nearest for masks. The list is flattened into the batch by
    ``list_data_collate``, as in online mode.

    Args:
        keys: the (loaded) healthy image key.
        variants_key: key of the variant file paths.
        masks_key: key of the variant mask paths (same order).
        target_key: output key of the healthy image.
        mask_key: output key of the anomaly mask.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.IMAGE,
        variants_key: str = Keys.VARIANTS,
        masks_key: str = Keys.VARIANT_MASKS,
        target_key: str = Keys.TARGET,
        mask_key: str = Keys.ANOMALY_MASK,
    ) -> None:
        super().__init__(keys)
        self.variants_key, self.masks_key = variants_key, masks_key
        self.target_key, self.mask_key = target_key, mask_key

    @staticmethod
    def _resize(array: np.ndarray, shape: tuple[int, int], mode: str) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
        if tuple(t.shape[-2:]) != shape:
            t = F.interpolate(t, size=shape, mode=mode)
        return t[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        key = self.first_key(d)
        healthy = torch.as_tensor(d[key]).float()
        shape = tuple(healthy.shape[-2:])
        rest = {k: v for k, v in d.items() if k not in (self.variants_key, self.masks_key)}
        samples = [{**rest, key: healthy.clone(), self.target_key: healthy, self.mask_key: torch.zeros_like(healthy)}]
        for variant, mask in zip(d.get(self.variants_key, []), d.get(self.masks_key, []), strict=True):
            img = self._resize(read_image(variant)[0], shape, "area")
            msk = (self._resize(np.asarray(read_labels(mask)) > 0, shape, "nearest") > 0).float()
            samples.append({**rest, key: img, self.target_key: healthy, self.mask_key: msk})
        return samples
