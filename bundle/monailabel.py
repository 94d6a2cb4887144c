"""What MONAI Label's ``/infer`` returns besides the mask: the image-level result, and the result file type.

MONAI Label (monaibundle app, 0.8.5) runs ``post_transforms`` of ``configs/inference.json`` on one item, then
its writer saves ``pred`` and returns the item's ``result`` dict as the JSON part of the answer (it adds
``label_names`` and ``latencies``). The writer takes the result file's type from the input's extension,
unless the item holds ``result_extension``: DICOM inputs (a ``.dcm`` study, or the one-file series folder a
DICOMweb datastore hands over) get ``.nii.gz``, which its ITK writer saves for a 2D mask. See
``docs/monailabel.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle.keys import Keys

__all__ = ["MONAILabelResultd"]


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu().reshape(-1)[0])
    return float(np.asarray(value).reshape(-1)[0])


class MONAILabelResultd(MapTransform):
    """Write the image-level findings of one inferred item into MONAI Label's ``result`` dict.

    ``result`` gets: ``score`` (the anomaly score, float), ``score_rule``, ``score_threshold`` (None when no
    threshold is calibrated), ``predicted_label`` (1 = anomalous when ``score >= score_threshold``; None
    without a threshold), ``lungs_found`` (lungs PBTSeg found, 0-2; None when not computed), and
    ``mask_fraction`` (share of mask pixels, at the input's own size). Existing ``result`` entries are kept.
    For a DICOM input it sets ``result_extension`` to ``.nii.gz`` unless the request gave one.

    Args:
        keys: the score key (one key), as written by ``bundle.transforms.AnomalyScored``.
        score_threshold: calibrated image threshold (``models/threshold.json``), or None.
        score_rule: the name of the score rule, recorded in the result.
        pred_key: the mask (any shape, values 0/1).
        lungs_found_key: number of lungs found (written by ``AnomalyScored``); may be absent.
        image_key: the input image, whose meta ``format`` says whether it was DICOM.
        result_key: MONAI Label's result dict key.
        extension_key: MONAI Label's result file extension key.
        dicom_result_extension: the result file type for DICOM inputs.
        allow_missing_keys: do nothing when the score is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.SCORE,
        score_threshold: float | None = None,
        score_rule: str = "mean",
        pred_key: str = Keys.PRED,
        lungs_found_key: str = "lungs_found",
        image_key: str = Keys.IMAGE,
        result_key: str = "result",
        extension_key: str = "result_extension",
        dicom_result_extension: str = ".nii.gz",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"MONAILabelResultd: one score key expected, got {self.keys}")
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.score_rule = score_rule
        self.pred_key, self.lungs_found_key, self.image_key = pred_key, lungs_found_key, image_key
        self.result_key, self.extension_key = result_key, extension_key
        self.dicom_result_extension = dicom_result_extension

    def __call__(self, data: dict) -> dict:
        """Args: data: one item after postprocessing. Returns: a copy with ``result`` (and maybe
        ``result_extension``)."""
        d = dict(data)
        for key in self.key_iterator(d):
            score = _as_float(d[key])
            lungs = d.get(self.lungs_found_key)
            result = dict(d.get(self.result_key) or {})
            result.update(
                score=score,
                score_rule=self.score_rule,
                score_threshold=self.score_threshold,
                predicted_label=None if self.score_threshold is None else int(score >= self.score_threshold),
                lungs_found=None if lungs is None else int(_as_float(lungs)),
            )
            if self.pred_key in d:
                pred = d[self.pred_key]
                pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
                result["mask_fraction"] = float((pred > 0).mean()) if pred.size else 0.0
            d[self.result_key] = result
            image = d.get(self.image_key)
            fmt = getattr(image, "meta", {}).get("format") if image is not None else None
            if fmt == "dicom" and not d.get(self.extension_key):
                d[self.extension_key] = self.dicom_result_extension
        return d
