"""bundle.transforms.MONAILabelResultd: the image-level result MONAI Label's /infer returns (fast; the real
server is exercised in tests/workflows/test_monailabel.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.monailabel import MONAILabelResultd


def _item(fmt: str, score: float = 0.02, lungs=2, **extra) -> dict:
    image = MetaTensor(torch.zeros(1, 4, 5), meta={"format": fmt})
    pred = torch.zeros(5, 4, dtype=torch.uint8)
    pred[:2, :3] = 1  # 6 of 20 pixels
    return {
        "image": image,
        "pred": pred,
        "score": torch.tensor(score, dtype=torch.float64),
        "lungs_found": lungs,
        **extra,
    }


@pytest.mark.parametrize("threshold, label", [(None, None), (0.01, 1), (0.05, 0), (0.02, 1)])
def test_result_fields(threshold, label):
    d = MONAILabelResultd(keys="score", score_threshold=threshold, score_rule="mean")(_item("png", result={"keep": 1}))
    assert d["result"] == {
        "keep": 1,
        "score": pytest.approx(0.02),
        "score_rule": "mean",
        "score_threshold": threshold,
        "predicted_label": label,
        "lungs_found": 2,
        "mask_fraction": pytest.approx(0.3),
    }
    assert "result_extension" not in d


def test_lungs_not_computed_and_no_mask():
    item = _item("nifti", lungs=None)
    del item["pred"]
    d = MONAILabelResultd(keys="score")(item)
    assert d["result"]["lungs_found"] is None and "mask_fraction" not in d["result"]


def test_dicom_inputs_get_a_nifti_result_unless_requested():
    assert MONAILabelResultd(keys="score")(_item("dicom"))["result_extension"] == ".nii.gz"
    assert MONAILabelResultd(keys="score")(_item("dicom", result_extension=".nrrd"))["result_extension"] == ".nrrd"


def test_one_score_key():
    with pytest.raises(ValueError, match="one score key"):
        MONAILabelResultd(keys=["score", "other"])
    assert "result" not in MONAILabelResultd(keys="score", allow_missing_keys=True)({"pred": np.zeros((2, 2))})
