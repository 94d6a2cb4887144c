"""Image- and pixel-level metrics for anomaly detection and segmentation.

Conventions used throughout:

- Labels are 0 (healthy / normal pixel) and 1 (diseased / anomalous pixel); a higher score means "more
  anomalous". A sample is predicted positive when ``score >= threshold``.
- Ties are handled exactly: samples with equal scores enter a curve together, as one step. AUROC then
  counts a tied positive/negative pair as one half (the Mann-Whitney statistic), and average precision is
  the step-wise sum ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds (the definition used
  in the anomaly-detection literature and by scikit-learn, no interpolation).
- A ranking metric needs both classes: with only one class present ``image_auroc``/``image_ap`` (and the
  pixel versions) return ``None`` (JSON ``null``), never a made-up number.

Pixel metrics can be streamed over a test set with :class:`PixelAUROC` (histogram of the error values per
class, so memory does not grow with the number of images) and :class:`DiceAccumulator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "binary_curve_counts",
    "roc_curve",
    "pr_curve",
    "image_auroc",
    "image_ap",
    "best_f1",
    "dice",
    "ImageScores",
    "DiceAccumulator",
    "PixelAUROC",
    "pixel_auroc",
    "nan_to_none",
]


def _as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores).ravel()
    y = _as_numpy(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values.")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (healthy) or 1 (diseased).")
    return s, y.astype(bool)


def binary_curve_counts(pos_counts: np.ndarray, neg_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true/false positive counts from per-threshold class counts.

    Args:
        pos_counts: (T,) number of positives at each distinct score level, ordered from the HIGHEST score
            level to the lowest.
        neg_counts: (T,) same for negatives.

    Returns:
        ``(tp, fp)``, each (T + 1,), starting with 0: entry ``k`` counts the samples whose score is at or above
        the ``k``-th level (entry 0 = nothing predicted positive).
    """
    tp = np.concatenate([[0.0], np.cumsum(np.asarray(pos_counts, dtype=np.float64))])
    fp = np.concatenate([[0.0], np.cumsum(np.asarray(neg_counts, dtype=np.float64))])
    return tp, fp


def _level_counts(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct score levels (descending) with the number of positives and negatives at each."""
    s, y = _validate(scores, labels)
    levels, inverse = np.unique(-s, return_inverse=True)  # ascending in -s == descending in s
    pos = np.bincount(inverse, weights=y.astype(np.float64), minlength=levels.size)
    neg = np.bincount(inverse, weights=(~y).astype(np.float64), minlength=levels.size)
    return -levels, pos, neg


def _auroc_from_counts(tp: np.ndarray, fp: np.ndarray) -> float | None:
    if tp[-1] == 0 or fp[-1] == 0:
        return None
    tpr, fpr = tp / tp[-1], fp / fp[-1]
    # trapezoids: a tied step (positives and negatives at one level) contributes one half per pair
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def _ap_from_counts(tp: np.ndarray, fp: np.ndarray) -> float | None:
    if tp[-1] == 0 or fp[-1] == 0:
        return None
    recall = tp[1:] / tp[-1]
    predicted = tp[1:] + fp[1:]
    precision = np.divide(tp[1:], predicted, out=np.ones_like(predicted), where=predicted > 0)
    prev_recall = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - prev_recall) * precision))


def roc_curve(scores: Any, labels: Any) -> dict[str, np.ndarray] | None:
    """ROC curve over the distinct score thresholds.

    Args:
        scores: (N,) anomaly scores, higher = more anomalous.
        labels: (N,) 0/1 ground truth.

    Returns:
        dict with ``fpr``, ``tpr`` (both (T + 1,), from (0, 0) to (1, 1)) and ``thresholds`` ((T + 1,), the
        first is ``+inf``), or ``None`` when only one class is present.
    """
    levels, pos, neg = _level_counts(scores, labels)
    tp, fp = binary_curve_counts(pos, neg)
    if tp[-1] == 0 or fp[-1] == 0:
        return None
    return {"fpr": fp / fp[-1], "tpr": tp / tp[-1], "thresholds": np.concatenate([[np.inf], levels])}


def pr_curve(scores: Any, labels: Any) -> dict[str, np.ndarray] | None:
    """Precision-recall curve over the distinct score thresholds (highest threshold first).

    Args:
        scores: (N,) anomaly scores, higher = more anomalous.
        labels: (N,) 0/1 ground truth.

    Returns:
        dict with ``precision``, ``recall`` and ``thresholds`` (each (T,)), or ``None`` when only one class
        is present.
    """
    levels, pos, neg = _level_counts(scores, labels)
    tp, fp = binary_curve_counts(pos, neg)
    if tp[-1] == 0 or fp[-1] == 0:
        return None
    return {"precision": tp[1:] / (tp[1:] + fp[1:]), "recall": tp[1:] / tp[-1], "thresholds": levels}


def image_auroc(scores: Sequence[float] | np.ndarray | torch.Tensor, labels: Any) -> float | None:
    """Area under the ROC curve, ties counted as one half (equals the Mann-Whitney U statistic / (P x N)).

    Args:
        scores: (N,) anomaly scores, higher = more anomalous.
        labels: (N,) 0 healthy / 1 diseased.

    Returns:
        AUROC in [0, 1], or ``None`` when the labels hold only one class (AUROC is undefined there).
    """
    _, pos, neg = _level_counts(scores, labels)
    return _auroc_from_counts(*binary_curve_counts(pos, neg))


def image_ap(scores: Sequence[float] | np.ndarray | torch.Tensor, labels: Any) -> float | None:
    """Average precision, the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over distinct score thresholds.

    Tied scores form one step (they are predicted positive together), so the result does not depend on the
    order of tied samples. Matches ``sklearn.metrics.average_precision_score``.

    Args:
        scores: (N,) anomaly scores, higher = more anomalous.
        labels: (N,) 0 healthy / 1 diseased.

    Returns:
        AP in [0, 1], or ``None`` when the labels hold only one class: with no negatives AP would be 1 for
        any scoring, with no positives it is undefined; neither says anything about the model.
    """
    _, pos, neg = _level_counts(scores, labels)
    return _ap_from_counts(*binary_curve_counts(pos, neg))


def best_f1(scores: Any, labels: Any) -> dict[str, float | None] | None:
    """Operating point with the highest F1 over all thresholds ``score >= t``.

    Args:
        scores: (N,) anomaly scores, higher = more anomalous.
        labels: (N,) 0/1 ground truth.

    Returns:
        dict with ``threshold`` (a score level; predict positive when ``score >= threshold``), ``f1``,
        ``precision``, ``recall``, ``specificity`` (None without negatives); ``None`` when there are no positives.
        Among thresholds
        with equal F1 the highest one is returned.
    """
    levels, pos, neg = _level_counts(scores, labels)
    tp, fp = binary_curve_counts(pos, neg)
    n_pos, n_neg = tp[-1], fp[-1]
    if n_pos == 0:
        return None
    tp, fp = tp[1:], fp[1:]
    f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
    k = int(np.argmax(f1))  # first maximum = highest threshold
    return {
        "threshold": float(levels[k]),
        "f1": float(f1[k]),
        "precision": float(tp[k] / (tp[k] + fp[k])),
        "recall": float(tp[k] / n_pos),
        "specificity": float(1.0 - fp[k] / n_neg) if n_neg > 0 else None,
    }


def dice(pred: Any, gt: Any, empty_value: float = 1.0) -> float:
    """Dice coefficient ``2 |P & G| / (|P| + |G|)`` of two binary masks (non-zero = foreground).

    Args:
        pred: predicted mask, any shape.
        gt: ground-truth mask, same number of elements.
        empty_value: value returned when both masks are empty (default 1: nothing to find, nothing found).

    Returns:
        Dice in [0, 1].
    """
    inter, p, g = DiceAccumulator.counts(pred, gt)
    return float(empty_value) if p + g == 0 else 2.0 * inter / (p + g)


class ImageScores:
    """Streams image-level anomaly scores and labels (0 healthy, 1 diseased) and gives the image metrics.

    One accumulator for the validation monitor, the operating-point selection and the evaluation, so the three
    compute AUROC, AP and best F1 the same way. Each metric is None while only one class has been seen.
    """

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.labels: list[int] = []

    def update(self, score: float, label: int) -> None:
        """Add one image's score and label."""
        self.scores.append(float(score))
        self.labels.append(int(label))

    @property
    def both_classes(self) -> bool:
        return 0 in self.labels and 1 in self.labels

    def auroc(self) -> float | None:
        return nan_to_none(image_auroc(self.scores, self.labels)) if self.both_classes else None

    def ap(self) -> float | None:
        return nan_to_none(image_ap(self.scores, self.labels)) if self.both_classes else None

    def best_f1(self) -> dict[str, float | None] | None:
        return best_f1(self.scores, self.labels) if self.both_classes else None


class DiceAccumulator:
    """Streams per-image and pooled Dice over a test set.

    ``mean`` is the mean of per-image Dice values; ``pooled`` is ``2 sum|P & G| / (sum|P| + sum|G|)`` over
    all pixels of all images (large lesions weigh more).
    """

    def __init__(self, empty_value: float = 1.0) -> None:
        self.empty_value = empty_value
        self.values: list[float] = []
        self.inter = self.pred_sum = self.gt_sum = 0

    @staticmethod
    def counts(pred: Any, gt: Any) -> tuple[int, int, int]:
        p = _as_numpy(pred, dtype=np.float32).ravel() > 0
        g = _as_numpy(gt, dtype=np.float32).ravel() > 0
        if p.shape != g.shape:
            raise ValueError(f"prediction and ground truth differ in size: {p.size} vs {g.size}.")
        return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))

    def update(self, pred: Any, gt: Any) -> float:
        """Add one image; returns its Dice."""
        inter, p, g = self.counts(pred, gt)
        self.inter, self.pred_sum, self.gt_sum = self.inter + inter, self.pred_sum + p, self.gt_sum + g
        value = float(self.empty_value) if p + g == 0 else 2.0 * inter / (p + g)
        self.values.append(value)
        return value

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def pooled(self) -> float | None:
        if not self.values:
            return None
        total = self.pred_sum + self.gt_sum
        return float(self.empty_value) if total == 0 else 2.0 * self.inter / total


class PixelAUROC:
    """Streaming pixel-level AUROC from per-class histograms of the error values.

    Error values are binned on a square-root scale over ``[0, max_value]`` (``num_bins`` bins; values above
    ``max_value`` go to the last bin). For squared errors ``(x - r)^2`` of images in [0, 1] the square root
    is the absolute difference, so the bins are uniform in |x - r| with a resolution of ``1 / num_bins``.
    Pixels in one bin count as tied (one half per positive/negative pair), so the result equals the exact
    AUROC of the error values quantised to the bins; memory is ``2 x num_bins`` counters whatever the
    number of images. With ``num_bins=None`` every value is its own level (exact; keeps all pixels, meant
    for small inputs and tests).

    Args:
        num_bins: number of histogram bins, or None for the exact computation.
        max_value: upper end of the binned range (1.0 for squared errors of [0, 1] images).
    """

    def __init__(self, num_bins: int | None = 65536, max_value: float = 1.0) -> None:
        if max_value <= 0:
            raise ValueError(f"max_value must be positive, got {max_value}.")
        self.num_bins, self.max_value = num_bins, float(max_value)
        self.reset()

    def reset(self) -> None:
        if self.num_bins is None:
            self._scores: list[np.ndarray] = []
            self._labels: list[np.ndarray] = []
        else:
            self.pos = np.zeros(self.num_bins, dtype=np.int64)
            self.neg = np.zeros(self.num_bins, dtype=np.int64)

    def update(self, error_map: Any, gt_mask: Any) -> None:
        """Add one image (or a batch): ``error_map`` and ``gt_mask`` with the same number of elements."""
        e = _as_numpy(error_map, dtype=np.float64).ravel()
        g = _as_numpy(gt_mask, dtype=np.float32).ravel() > 0
        if e.shape != g.shape:
            raise ValueError(f"error map and mask differ in size: {e.size} vs {g.size}.")
        if not np.all(np.isfinite(e)):
            raise ValueError("error map contains NaN or infinite values.")
        if self.num_bins is None:
            self._scores.append(e)
            self._labels.append(g)
            return
        q = np.sqrt(np.clip(e, 0.0, self.max_value) / self.max_value)
        idx = np.minimum((q * self.num_bins).astype(np.int64), self.num_bins - 1)
        self.pos += np.bincount(idx[g], minlength=self.num_bins)
        self.neg += np.bincount(idx[~g], minlength=self.num_bins)

    def compute(self) -> float | None:
        """AUROC over all pixels seen so far; ``None`` when there are no anomalous or no normal pixels."""
        if self.num_bins is None:
            if not self._scores:
                return None
            return image_auroc(np.concatenate(self._scores), np.concatenate(self._labels))
        return _auroc_from_counts(*binary_curve_counts(self.pos[::-1], self.neg[::-1]))


def pixel_auroc(error_maps: Any, gt_masks: Any, num_bins: int | None = 65536, max_value: float = 1.0) -> float | None:
    """Pixel-level AUROC of error maps against ground-truth masks, pooled over all images.

    Args:
        error_maps: one array/tensor (any shape) or a sequence of per-image arrays.
        gt_masks: matching masks (non-zero = anomalous pixel).
        num_bins: histogram bins on the square-root scale (see :class:`PixelAUROC`), None for exact.
        max_value: upper end of the binned range.

    Returns:
        AUROC, or ``None`` if all pixels belong to one class.
    """
    acc = PixelAUROC(num_bins=num_bins, max_value=max_value)
    if isinstance(error_maps, (list, tuple)):
        if len(error_maps) != len(gt_masks):
            raise ValueError(f"{len(error_maps)} error maps but {len(gt_masks)} masks.")
        for e, g in zip(error_maps, gt_masks, strict=True):
            acc.update(e, g)
    else:
        acc.update(error_maps, gt_masks)
    return acc.compute()


def nan_to_none(value: float | None) -> float | None:
    """JSON-friendly metric value: NaN/inf/None become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
