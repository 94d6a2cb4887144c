"""Validation during training: which images, their fixed synthetic anomalies, and the anomaly metrics.

Two modes, chosen from the data by :func:`bundle.training.data.training_split` (and logged):

- ``real``: the dataset's validation split (``<root>/val/{healthy,diseased}`` or a datalist's ``validation``)
  holds healthy and diseased images; metrics on them, pixel Dice where ground-truth masks exist.
- ``synthetic``: no diseased validation images. A held-out part of the healthy training images is used twice:
  as healthy images (label 0) and with one ART-ASyn anomaly each (label 1, mask = the synthetic mask). Every
  anomaly is drawn with its own fixed seed, so the validation set is identical at every validation and across
  runs and resumes.

Metrics (ignite, on the evaluator): image AUROC (key metric) and AP of the image score (mean error by
default), and the mean per-image pixel Dice of the inference mask rule over images with masks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from bundle.evaluation.metrics import dice, image_ap, image_auroc
from bundle.evaluation.postprocess import anomaly_mask, error_map, image_score
from bundle.io import read_labels
from bundle.synthesis.transforms import RandTextureAnomaly
from bundle.training.data import image_label

__all__ = [
    "LoadMaskd",
    "SeededTextureAnomalyd",
    "ValidationItemsd",
    "prepare_validation_batch",
    "ImageAUROC",
    "ImageAP",
    "PixelDice",
]

logger = logging.getLogger(__name__)


class LoadMaskd(MapTransform):
    """Load ground-truth masks (any format :func:`bundle.io.read_labels` reads) as (1, H, W) float32 0/1.

    Entries without the key (healthy images) are left alone; use :class:`ValidationItemsd` afterwards.
    """

    def __init__(self, keys: KeysCollection = "mask", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                d[key] = torch.as_tensor((np.asarray(read_labels(d[key])) > 0)[None].astype(np.float32))
        return d


class SeededTextureAnomalyd(MapTransform):
    """Deterministic ART-ASyn anomaly for entries that carry a seed (the synthetic validation set).

    Entries with ``seed_key`` get one anomaly drawn with ``RandTextureAnomaly(prob=1)`` seeded by that value;
    the anomalous image replaces ``image`` and the synthetic mask is written to ``mask_key``. Entries without a
    seed pass unchanged. An empty anomaly (no lung found) sets ``label`` to None, so metrics skip the entry.
    Not a random transform: the same entry always gives the same result (so it can be cached).

    Args:
        keys: image key.
        lung_key: lung label map key (same size as the image).
        seed_key: per-entry seed key.
        mask_key: output mask key.
        synthesis_args: extra arguments of :class:`bundle.synthesis.transforms.RandTextureAnomaly`.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lung_key: str = "lung",
        seed_key: str = "synthetic_seed",
        mask_key: str = "mask",
        synthesis_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=False)

        self.synth = RandTextureAnomaly(prob=1.0, **dict(synthesis_args or {}))
        self.lung_key, self.seed_key, self.mask_key = lung_key, seed_key, mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get(self.seed_key) is None:
            return d
        self.synth.set_random_state(seed=int(d[self.seed_key]) % (2**32))
        for key in self.key_iterator(d):
            d[key], d[self.mask_key] = self.synth(d[key], d[self.lung_key])
            if not bool((d[self.mask_key] > 0).any()):
                # no lung found, so no anomaly: the "diseased" copy equals the healthy one; leave it out of metrics
                logger.warning("synthetic validation anomaly is empty (no lung found?); entry ignored by metrics.")
                d["label"] = None
        return d


class ValidationItemsd(MapTransform):
    """Give every validation entry the same keys so that they collate: ``label`` (0/1), ``mask``, ``has_mask``.

    ``mask`` becomes an all-zero (1, H, W) map where none exists; ``has_mask`` is 1 only for diseased entries
    with a real (or synthetic) mask, so pixel Dice is computed on those alone.
    """

    def __init__(self, keys: KeysCollection = "image", mask_key: str = "mask", label_key: str = "label") -> None:
        super().__init__(keys)
        self.mask_key, self.label_key = mask_key, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.first_key(d)]
        label = image_label(d)
        has_mask = self.mask_key in d and isinstance(d[self.mask_key], (torch.Tensor, np.ndarray))
        if has_mask and tuple(d[self.mask_key].shape[-2:]) != tuple(image.shape[-2:]):
            raise ValueError(f"mask {tuple(d[self.mask_key].shape)} does not match image {tuple(image.shape)}.")
        mask = d[self.mask_key] if has_mask else torch.zeros(image.shape)
        d[self.mask_key] = convert_to_dst_type((mask > 0), image, dtype=torch.float32)[0]
        d[self.label_key] = torch.tensor(-1 if label is None else label)
        d["has_mask"] = torch.tensor(int(has_mask and label == 1))
        return d


def prepare_validation_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``prepare_batch`` for the evaluator: input image, and the label/mask/has_mask dict as "targets"."""

    def _to(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        x = torch.as_tensor(x)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.to(device=device, dtype=dtype, non_blocking=non_blocking)

    targets = {
        "label": _to(batchdata["label"], torch.long),
        "mask": _to(batchdata["mask"], torch.float32),
        "has_mask": _to(batchdata["has_mask"], torch.long),
    }
    return _to(batchdata["image"], torch.float32), targets


class _ReconstructionMetric(Metric):
    """Accumulates image scores, labels and per-image Dice from evaluator outputs ``{image, pred, label}``.

    ``pred`` is the reconstruction (clamped to [0, 1] here, as in inference), ``label`` the dict made by
    :func:`prepare_validation_batch`. Scores and masks use :mod:`bundle.evaluation.postprocess` (per-image rules).
    """

    required_output_keys = ("image", "pred", "label")
    uses_scores = True  # which statistics this metric needs (each metric accumulates only those)
    uses_dice = False

    def __init__(self, score_rule: str = "mean", output_transform: Any = lambda x: x, device: Any = "cpu") -> None:
        self.score_rule = score_rule
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self.scores: list[float] = []
        self.labels: list[int] = []
        self.dices: list[float] = []

    def update(self, output: Sequence[Any]) -> None:
        image, pred, targets = output
        image = image.detach().float().cpu()
        recon = pred.detach().float().cpu().clamp(0, 1)
        for i in range(image.shape[0]):
            label = int(targets["label"][i])
            if label < 0:
                continue
            if self.uses_scores:
                self.scores.append(image_score(error_map(image[i], recon[i]), rule=self.score_rule))
                self.labels.append(label)
            if self.uses_dice and int(targets["has_mask"][i]):
                self.dices.append(dice(anomaly_mask(image[i], recon[i]), targets["mask"][i].cpu()))

    def compute(self) -> float:
        raise NotImplementedError


class ImageAUROC(_ReconstructionMetric):
    """Image-level AUROC of the anomaly score (NaN when only one class is present)."""

    def compute(self) -> float:
        value = image_auroc(self.scores, self.labels) if self.scores else None
        return float("nan") if value is None else float(value)


class ImageAP(_ReconstructionMetric):
    """Image-level average precision of the anomaly score (NaN when only one class is present)."""

    def compute(self) -> float:
        value = image_ap(self.scores, self.labels) if self.scores else None
        return float("nan") if value is None else float(value)


class PixelDice(_ReconstructionMetric):
    """Mean per-image Dice of the per-image inference mask over images with masks (NaN when there are none)."""

    uses_scores, uses_dice = False, True

    def compute(self) -> float:
        return float(np.mean(self.dices)) if self.dices else float("nan")
