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

from bundle.evaluation.metrics import DiceAccumulator, ImageScores
from bundle.evaluation.operating_point import DEFAULT_LUNG_DILATION, DEFAULT_MIN_THRESHOLD, MASK_POLARITIES
from bundle.evaluation.postprocess import (
    anomaly_mask,
    error_map,
    image_score,
    mask_difference,
    mask_region,
    threshold_mask,
)
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
    "SCORE_RULE_CANDIDATES",
    "MASK_RELATIVE_CANDIDATES",
    "MASK_FLOOR_CANDIDATES",
    "MASK_SETTINGS",
    "select_operating_point",
    "chosen_candidates",
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
        self.images = ImageScores()
        self.dice = DiceAccumulator()

    def update(self, output: Sequence[Any]) -> None:
        image, pred, targets = output
        image = image.detach().float().cpu()
        recon = pred.detach().float().cpu().clamp(0, 1)
        for i in range(image.shape[0]):
            label = int(targets["label"][i])
            if label < 0:
                continue
            if self.uses_scores:
                self.images.update(image_score(error_map(image[i], recon[i]), rule=self.score_rule), label)
            if self.uses_dice and int(targets["has_mask"][i]):
                self.dice.update(anomaly_mask(image[i], recon[i]), targets["mask"][i].cpu())

    def compute(self) -> float:
        raise NotImplementedError


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


class ImageAUROC(_ReconstructionMetric):
    """Image-level AUROC of the anomaly score (NaN when only one class is present)."""

    def compute(self) -> float:
        return _nan_if_none(self.images.auroc())


class ImageAP(_ReconstructionMetric):
    """Image-level average precision of the anomaly score (NaN when only one class is present)."""

    def compute(self) -> float:
        return _nan_if_none(self.images.ap())


class PixelDice(_ReconstructionMetric):
    """Mean per-image Dice of the per-image inference mask over images with masks (NaN when there are none)."""

    uses_scores, uses_dice = False, True

    def compute(self) -> float:
        return _nan_if_none(self.dice.mean)


# Candidates of the post-training selection (:func:`select_operating_point`). The published rule comes first, so it
# wins ties. Score rules: whole-image or lung-only statistics of the error map (the lungs are where the test
# opacities are, and most error of a healthy reconstruction lies on the body outline, outside them).
SCORE_RULE_CANDIDATES = ("mean", "p99", "lung_mean", "lung_p99", "lung_max")
# Relative factor of the per-image mask rule ``|image - recon| >= max(0.03, relative x max)`` (published 0.2).
MASK_RELATIVE_CANDIDATES = (0.2, 0.1, 0.15, 0.25, 0.3, 0.4, 0.5)
# Lower bound of that rule (published 0.03): a higher floor keeps an image whose largest difference is faint (a
# small lesion, or none) from a mask spread over the remaining reconstruction noise.
MASK_FLOOR_CANDIDATES = (DEFAULT_MIN_THRESHOLD, 0.05)
# Gaussian smoothing of the maps, sigma as a fraction of the image side (0 = none, published): a doubling grid.
SMOOTHING_CANDIDATES = (0.0, 0.01, 0.02, 0.04)
# The mask settings that the selection chooses, as an operating point names them.
MASK_SETTINGS = ("mask_relative", "restrict_to_lungs", "mask_smoothing", "mask_floor", "mask_polarity")


def _log_separation(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Separation of diseased from healthy scores: difference of the class means of log(score) over their pooled
    standard deviation (d'); it ranks rules that all separate the classes perfectly (AUROC 1) by their margin."""
    s = np.log(np.asarray(scores, dtype=np.float64) + 1e-12)
    y = np.asarray(labels)
    h, d = s[y == 0], s[y == 1]
    spread = np.sqrt((h.var() + d.var()) / 2)
    return float((d.mean() - h.mean()) / spread) if spread > 0 else float(np.sign(d.mean() - h.mean()) * np.inf)


def _score_name(rule: str, smoothing: float) -> str:
    return f"{rule}, smoothing={smoothing:g}"


def _mask_name(relative: float, restrict: bool, smoothing: float, floor: float, polarity: str) -> str:
    lungs = str(restrict).lower()
    return f"relative={relative:g}, lungs={lungs}, smoothing={smoothing:g}, floor={floor:g}, polarity={polarity}"


def chosen_candidates(point: Mapping[str, Any]) -> tuple[str, str | None]:
    """The names of the chosen score and mask candidates of a :func:`select_operating_point` result (the keys of
    its ``score_auroc`` and ``mask_dice`` tables); the mask name is None when no mask was chosen."""
    score = _score_name(point["score_rule"], point["score_smoothing"])
    if "mask_relative" not in point:
        return score, None
    return score, _mask_name(*(point[k] for k in MASK_SETTINGS))


def _mask_dices(
    dices: dict[tuple, DiceAccumulator],
    image: torch.Tensor,
    recon: torch.Tensor,
    lung: torch.Tensor | None,
    truth: torch.Tensor,
    dilation: float,
) -> None:
    """Adds one item's Dice to the accumulator of every mask candidate ``(relative, restrict, smoothing, floor,
    polarity)`` in ``dices``: the same masks as :func:`bundle.evaluation.postprocess.anomaly_mask`, with each
    difference map (polarity, smoothing) and each region computed once for all the thresholds that use it."""
    diffs: dict[tuple[str, float], torch.Tensor] = {}
    regions: dict[bool, torch.Tensor] = {}
    for combo, acc in dices.items():
        relative, restrict, g, floor, polarity = combo
        if (polarity, g) not in diffs:
            diffs[(polarity, g)] = mask_difference(image, recon, g, polarity)
        diff = diffs[(polarity, g)]
        if restrict not in regions:
            regions[restrict] = mask_region(lung if restrict else None, diff, dilation)
        pred = threshold_mask(diff, regions[restrict], None, floor, relative)
        acc.update(pred.to(torch.uint8).reshape(image.shape), truth)


def select_operating_point(
    network: torch.nn.Module,
    dataloader: Any,
    device: str | torch.device = "cpu",
    score_rules: Sequence[str] = SCORE_RULE_CANDIDATES,
    mask_relatives: Sequence[float] = MASK_RELATIVE_CANDIDATES,
    restrict_options: Sequence[bool] = (False, True),
    smoothings: Sequence[float] = SMOOTHING_CANDIDATES,
    mask_smoothings: Sequence[float] | None = None,
    lung_dilation: float | None = None,
    mask_floors: Sequence[float] = MASK_FLOOR_CANDIDATES,
    mask_polarities: Sequence[str] = MASK_POLARITIES,
) -> dict[str, Any]:
    """Choose the image score rule and the mask rule on the validation monitor (never on a test set).

    Every candidate is computed on the same reconstructions. Score: the rule and smoothing with the highest image
    AUROC; ties (e.g. several rules at AUROC 1 on easy synthetic anomalies) go to the larger separation of the
    log scores (:func:`_log_separation`), then to the earlier candidate. Mask: the smoothing, relative factor of
    the per-image rule, its floor, its polarity (``|image - recon|`` or only where the image is brighter) and
    the restriction to the dilated lungs with the highest mean per-image Dice over the
    diseased items with masks; ties go to the earlier candidate (the published rule is listed first). In the
    synthetic mode these are the training monitor's healthy images with their fixed synthetic anomalies, so the
    choice never sees a test image.

    Args:
        network: the reconstruction network (in eval mode here).
        dataloader: validation batches with ``image`` (B, 1, H, W), ``label`` (B,) (-1: skip), ``mask``
            (B, 1, H, W), ``has_mask`` (B,) and ``lung`` (B, 1, H, W) lung label maps (needed by the ``lung_``
            rules and the restriction; without it those candidates use the whole image).
        device: where the network runs.
        score_rules: candidate score rules (:func:`bundle.evaluation.postprocess.image_score`).
        mask_relatives: candidate relative factors of the per-image mask rule.
        restrict_options: candidate values of the lung restriction of the mask.
        smoothings: candidate smoothings of the error map for the score (fraction of the image side).
        mask_smoothings: candidate smoothings for the mask (default: ``smoothings``).
        lung_dilation: dilation of the lung restriction, fraction of the image size (None: the default).
        mask_floors: candidate lower bounds of the per-image mask rule.
        mask_polarities: candidate polarities of the mask (:data:`bundle.evaluation.operating_point.MASK_POLARITIES`).

    Returns:
        ``{"score_rule", "score_smoothing", "mask_relative", "mask_floor", "mask_polarity", "mask_smoothing",
        "restrict_to_lungs", "selected_on",
        "num_healthy", "num_diseased", "num_with_masks", "score_auroc": {candidate: AUROC}, "score_separation":
        {candidate: d'}, "mask_dice": {candidate: Dice}}`` (candidates named ``"<rule>, smoothing=<s>"`` and
        ``"relative=<r>, lungs=<bool>, smoothing=<s>, floor=<f>, polarity=<p>"``).

    Raises:
        ValueError: the validation data hold no healthy or no diseased item.
    """
    dilation = DEFAULT_LUNG_DILATION if lung_dilation is None else lung_dilation
    mask_smoothings = smoothings if mask_smoothings is None else mask_smoothings
    score_cands = [(rule, float(g)) for g in smoothings for rule in score_rules]
    combos = [
        (float(r), bool(k), float(g), float(f), str(p))
        for p in mask_polarities
        for f in mask_floors
        for g in mask_smoothings
        for k in restrict_options
        for r in mask_relatives
    ]
    scores = {c: ImageScores() for c in score_cands}
    dices = {c: DiceAccumulator() for c in combos}
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            for batch in dataloader:
                image = torch.as_tensor(batch["image"]).float()
                image = image.as_tensor() if hasattr(image, "as_tensor") else image
                recon = network(image.to(device)).float().cpu().clamp(0, 1)
                lung = batch.get("lung")
                for i in range(image.shape[0]):
                    label = int(batch["label"][i])
                    if label < 0:
                        continue
                    err = error_map(image[i], recon[i])
                    lung_i = None if lung is None else torch.as_tensor(lung[i])
                    for rule, g in score_cands:
                        scores[(rule, g)].update(image_score(err, lung=lung_i, rule=rule, smoothing=g), label)
                    if label == 1 and int(batch["has_mask"][i]):
                        _mask_dices(dices, image[i], recon[i], lung_i, torch.as_tensor(batch["mask"][i]), dilation)
    finally:
        network.train(was_training)
    labels = scores[score_cands[0]].labels
    if 0 not in labels or 1 not in labels:
        raise ValueError("selecting the operating point needs healthy and diseased validation items.")
    auroc = {c: float(v.auroc()) for c, v in scores.items()}
    separation = {c: _log_separation(v.scores, v.labels) for c, v in scores.items()}
    rule, smoothing = max(score_cands, key=lambda c: (auroc[c], separation[c], -score_cands.index(c)))
    mean_dice = {c: v.mean for c, v in dices.items() if v.values}
    point: dict[str, Any] = {
        "score_rule": rule,
        "score_smoothing": smoothing,
        "selected_on": "validation monitor (synthetic anomalies on held-in healthy training images unless val/ exists)",
        "num_healthy": labels.count(0),
        "num_diseased": labels.count(1),
        "num_with_masks": len(next(iter(dices.values())).values) if dices else 0,
        "score_auroc": {_score_name(*c): v for c, v in auroc.items()},
        # JSON has no infinity: a perfect separation without spread is written as null
        "score_separation": {_score_name(*c): (v if np.isfinite(v) else None) for c, v in separation.items()},
        "mask_dice": {_mask_name(*c): d for c, d in mean_dice.items()},
    }
    if mean_dice:
        relative, restrict, g, floor, polarity = max(mean_dice, key=lambda c: (mean_dice[c], -combos.index(c)))
        point.update(
            mask_relative=relative,
            restrict_to_lungs=restrict,
            mask_smoothing=g,
            mask_floor=floor,
            mask_polarity=polarity,
        )
    return point
