"""bundle/evaluation/evaluator.py: the report handler driven by hand, the scored-once rule and the evaluation
datalist."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.data.failures import FailureLog
from bundle.evaluation.evaluator import AnomalyEvaluationReport, evaluation_datalist


def _item(image, recon, pred, label, mask=None, score=None, name="x.png"):
    image = MetaTensor(torch.as_tensor(image, dtype=torch.float32)[None], meta={"filename_or_obj": name})
    error = (image.as_tensor() - torch.as_tensor(recon, dtype=torch.float32)[None]) ** 2
    has_mask = mask is not None and label == 1
    return (
        {
            "label": torch.tensor(label),
            "mask": torch.as_tensor(mask if mask is not None else np.zeros_like(pred))[None],
            "has_mask": torch.tensor(int(has_mask)),
        },
        {
            "image": image,
            "pred": torch.as_tensor(pred)[None],
            "error": error,
            "score": float(error.mean()) if score is None else score,
            "lungs_found": 2,
        },
    )


def test_report_handler_by_hand(tmp_path):
    z = np.zeros((2, 2), np.float32)
    pred_a, gt_a = np.array([[1, 1], [0, 0]], np.uint8), np.array([[1, 0], [0, 0]], np.uint8)  # Dice 2/3
    pred_b, gt_b = np.array([[0, 0], [0, 1]], np.uint8), np.array([[0, 0], [1, 1]], np.uint8)  # Dice 2/3
    items = [
        _item(z, z, z.astype(np.uint8), 0, score=0.1, name="h1.png"),
        _item(z, z, z.astype(np.uint8), 0, score=0.4, name="h2.png"),
        _item(np.array([[0.9, 0.5], [0.0, 0.0]]), z, pred_a, 1, gt_a, score=0.35, name="d1.png"),
        _item(np.array([[0.0, 0.0], [0.2, 0.6]]), z, pred_b, 1, gt_b, score=0.8, name="d2.png"),
        _item(z, z, z.astype(np.uint8), 1, None, score=0.5, name="d3.png"),  # diseased, mask missing
    ]
    data = [{"image": f"{n}.png", "label": 1 if n.startswith("d") else 0} for n in ("h1", "h2", "d1", "d2", "d3")]
    data[2]["mask"] = data[3]["mask"] = "gt.png"
    failures = FailureLog(tmp_path / "f.jsonl")
    report = AnomalyEvaluationReport(tmp_path / "out", data, failures, num_bins=1000, progress=False)
    report.started()
    engine = SimpleNamespace(state=SimpleNamespace(batch=[b for b, _ in items], output=[o for _, o in items]))
    report.iteration_completed(engine)
    report.completed()
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # scores h: .1 .4 ; d: .35 .8 .5 -> pairs won: .35>.1 ; .8>both ; .5>both -> 5 of 6
    assert m["image_auroc"] == pytest.approx(5 / 6)
    # ranked: .8+ (R 1/3, P 1) .5+ (R 2/3, P 1) .4- .35+ (R 1, P 3/4) .1-
    assert m["image_ap"] == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 * 3 / 4)
    assert m["pixel_dice"] == pytest.approx(2 / 3)
    assert m["pixel_dice_pooled"] == pytest.approx(2 * 2 / (3 + 3))
    # pixels with known labels: h1, h2 (8 normal, error 0), d1, d2 (d3 has no mask: left out).
    # positives .81 .36 .04 ; negatives .25 + 12 zeros: .81 and .36 beat 13, .04 beats 12 -> 38 of 39
    assert m["pixel_auroc"] == pytest.approx(38 / 39, abs=1e-9)
    # pooled Dice over thresholds on |diff| (pos .9 .6 .2, neg .5): t in (0, .2] -> TP 3, FP 1 -> 6/7 (best)
    assert m["pixel_best_dice"] == pytest.approx(6 / 7)
    assert 0.0 < m["pixel_best_threshold"] <= 0.2
    # image F1: t=.8 -> 2/5, .5 -> 4/5, .4 -> 4/6, .35 -> 6/7 (best), .1 -> 6/8
    assert m["best_f1"]["threshold"] == pytest.approx(0.35) and m["best_f1"]["f1"] == pytest.approx(6 / 7)
    assert [Path(p).name for p in m["missing_masks"]] == ["d3.png"]
    assert m["num_with_masks"] == 2 and m["mode"] == "standard"
    assert (tmp_path / "out" / "montage.png").is_file()


def test_scored_once_is_enforced(tmp_path):
    z = np.zeros((2, 2), np.float32)
    b, o = _item(z, z, z.astype(np.uint8), 0, name="same.png")
    report = AnomalyEvaluationReport(
        tmp_path, [{"image": "same.png", "label": 0}], FailureLog(tmp_path / "f"), progress=False
    )
    report.started()
    report.iteration_completed(SimpleNamespace(state=SimpleNamespace(batch=[b, b], output=[o, o])))
    with pytest.raises(RuntimeError, match="exactly once"):
        report.completed()


def test_evaluation_datalist_errors(tmp_path, demo_root):
    assert len(evaluation_datalist(demo_root, "test")) == 8
    with pytest.raises(ValueError, match="'validation' split is empty"):
        evaluation_datalist(demo_root, "validation")
