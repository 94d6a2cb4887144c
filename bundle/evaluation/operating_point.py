"""The operating point: which rule turns an error map into an image score, and which threshold into a mask.

One place for the thresholds and their provenance:

- the published rules are the defaults: the image score is the mean of ``(image - recon)^2`` over the whole image;
  the mask is ``|image - recon| >= max(DEFAULT_MIN_THRESHOLD, DEFAULT_RELATIVE_THRESHOLD x per-image max)``;
- ``models/threshold.json`` may hold another operating point, chosen on the synthetic validation monitor when
  training ends (:func:`bundle.training.validation.select_operating_point`, ``--rule_selection validation``) or
  calibrated on a labelled split by the evaluation (``--calibrate true``, :func:`calibrated_operating_point`);
  evaluation and inference read it with :func:`load_operating_point`;
- :func:`describe_mask_rule` is the one text of the mask rule that reports and ``scores.json`` record.

Thresholds are in units of the absolute difference ``|image - recon|`` (images in [0, 1]); sizes (lung dilation,
smoothing) are fractions of the image side, so they scale with the image size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from bundle.io import write_text_atomic

__all__ = [
    "DEFAULT_SCORE_RULE",
    "DEFAULT_MIN_THRESHOLD",
    "DEFAULT_RELATIVE_THRESHOLD",
    "DEFAULT_LUNG_DILATION",
    "MASK_POLARITIES",
    "load_operating_point",
    "save_operating_point",
    "calibrated_operating_point",
    "with_defaults",
    "describe_mask_rule",
    "describe_point_mask",
]

logger = logging.getLogger(__name__)

#: the published image score: mean of the squared error over the whole image
DEFAULT_SCORE_RULE = "mean"
#: the published per-image mask rule: |image - recon| >= max(0.03, 0.2 x per-image max)
DEFAULT_MIN_THRESHOLD = 0.03
DEFAULT_RELATIVE_THRESHOLD = 0.2
#: which difference the mask thresholds: ``absolute`` = |image - recon| (published); ``brighter`` = the part of
#: ``image - recon`` above 0, i.e. only where the image is brighter (denser) than its healthy reconstruction:
#: opacities add density, while a reconstruction brighter than the image (a dark edge, a missed bright rib) is no
#: opacity. Images are read with dense = bright (MONOCHROME1 DICOM is inverted on reading).
MASK_POLARITIES = ("absolute", "brighter")
#: margin of the optional lung restriction, as a fraction of the image size (keeps opacities at the lung edge)
DEFAULT_LUNG_DILATION = 0.03


def load_operating_point(path: str | os.PathLike | None) -> dict[str, Any]:
    """Read an operating point (``models/threshold.json``).

    Args:
        path: JSON file; a missing file or ``None`` gives an empty dict (the published rules).

    Returns:
        dict that may hold ``score_rule``, ``score_smoothing``, ``score_threshold`` (image label = diseased when
        ``score >= score_threshold``), ``mask_threshold`` (fixed, on |image - recon|), ``mask_relative``,
        ``mask_floor`` (lower bound of the per-image rule), ``mask_polarity`` (:data:`MASK_POLARITIES`),
        ``mask_smoothing``, ``restrict_to_lungs``, plus provenance fields (``selected_on`` / ``calibrated_on``).
    """
    if path is None or not os.path.isfile(path):
        return {}
    with open(path) as f:
        point = json.load(f)
    if not isinstance(point, dict):
        raise ValueError(f"{path}: expected a JSON object with the score and mask rules / thresholds.")
    logger.info(f"operating point from {path}: { {k: v for k, v in point.items() if not isinstance(v, dict)} }")
    return point


def with_defaults(point: dict[str, Any] | None) -> dict[str, Any]:
    """Every rule setting of an operating point, the published default where ``point`` names none (the values
    the configs hand to the score and mask transforms)."""
    point = dict(point or {})
    return {
        "score_rule": point.get("score_rule", DEFAULT_SCORE_RULE),
        "score_smoothing": float(point.get("score_smoothing", 0.0)),
        "score_threshold": point.get("score_threshold"),
        "mask_threshold": point.get("mask_threshold"),
        "mask_relative": float(point.get("mask_relative", DEFAULT_RELATIVE_THRESHOLD)),
        "mask_floor": float(point.get("mask_floor", DEFAULT_MIN_THRESHOLD)),
        "mask_polarity": str(point.get("mask_polarity", MASK_POLARITIES[0])),
        "mask_smoothing": float(point.get("mask_smoothing", 0.0)),
        "restrict_to_lungs": bool(point.get("restrict_to_lungs", False)),
    }


def save_operating_point(path: str | os.PathLike, point: dict[str, Any]) -> Path:
    """Write an operating point as JSON, atomically (a reader never sees half a file)."""
    return write_text_atomic(Path(path), json.dumps(point, indent=2) + "\n")


def calibrated_operating_point(
    split: str, metrics: dict[str, Any], score_rule: str, score_smoothing: float = 0.0
) -> dict[str, Any]:
    """The operating point calibrated on a labelled split: the best-F1 image threshold and the best pooled-Dice
    fixed mask threshold, from the evaluation's metrics (``best_f1``, ``pixel_best_threshold``, ...).

    Raises:
        ValueError: the split allows neither (it needs healthy and diseased images, or diseased images with masks).
    """
    point: dict[str, Any] = {
        "calibrated_on": split,
        "num_images": metrics["num_images"],
        "score_rule": score_rule,
        "score_smoothing": score_smoothing,
    }
    if metrics.get("best_f1"):
        point.update(score_threshold=metrics["best_f1"]["threshold"], score_f1=metrics["best_f1"]["f1"])
    if metrics.get("pixel_best_threshold") is not None:
        point.update(mask_threshold=metrics["pixel_best_threshold"], mask_dice=metrics["pixel_best_dice"])
    if "score_threshold" not in point and "mask_threshold" not in point:
        raise ValueError(
            f"cannot calibrate on the {split!r} split: it needs healthy and diseased images (score "
            "threshold) and/or diseased images with masks (mask threshold)."
        )
    return point


def describe_point_mask(point: dict[str, Any], lung_dilation: float = DEFAULT_LUNG_DILATION) -> str:
    """:func:`describe_mask_rule` of the mask settings of an operating point (published defaults where it names
    none), as the training log and the benchmarks print a selection."""
    rules = with_defaults(point)
    return describe_mask_rule(
        rules["mask_threshold"],
        rules["mask_relative"],
        rules["restrict_to_lungs"],
        lung_dilation,
        rules["mask_smoothing"],
        rules["mask_floor"],
        rules["mask_polarity"],
    )


def describe_mask_rule(
    threshold: float | None = None,
    relative: float = DEFAULT_RELATIVE_THRESHOLD,
    restrict_to_lungs: bool = False,
    lung_dilation: float = DEFAULT_LUNG_DILATION,
    smoothing: float = 0.0,
    min_threshold: float = DEFAULT_MIN_THRESHOLD,
    polarity: str = MASK_POLARITIES[0],
) -> str:
    """The mask rule in words, as reports and ``scores.json`` record it (the arguments of
    :func:`bundle.evaluation.postprocess.anomaly_mask`)."""
    bound = f"{threshold:g}" if threshold is not None else f"max({min_threshold:g}, {relative:g} x per-image max)"
    diff = "|image - recon|" if polarity == "absolute" else "max(image - recon, 0)"
    text = f"{diff} >= {bound}"
    if restrict_to_lungs:
        text += f" within the lungs dilated by {lung_dilation:g} x size"
    if smoothing:
        text += f", {diff} smoothed by a Gaussian of sigma {smoothing:g} x size"
    return text
