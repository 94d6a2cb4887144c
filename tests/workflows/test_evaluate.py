"""configs/evaluate.json merged over train.json: metrics, reports, zero-shot mode, missing masks, calibration;
and the evaluation handler against hand-computed values."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.data.failures import FailureLog
from bundle.evaluation.evaluator import AnomalyEvaluationReport, evaluation_datalist
from bundle.evaluation.metrics import image_ap, image_auroc

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "evaluate.json")]
META = str(ROOT / "configs" / "metadata.json")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIGS[0])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("evaluate_model") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _evaluate(dataset_dir: Path, output_dir: Path, model: Path, **overrides) -> None:
    from monai.bundle import run

    run(
        "evaluating", config_file=CONFIGS, meta_file=META, dataset_dir=str(dataset_dir), output_dir=str(output_dir),
        ckpt_path=str(model), threshold_path=str(output_dir / "threshold.json"), val_batch_size=3, **overrides,
    )


def test_demo_evaluation_with_calibration(demo_root, model_path, tmp_path):
    out = tmp_path / "eval"
    _evaluate(demo_root, out, model_path, calibrate=True)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("image_auroc", "image_ap", "pixel_dice", "pixel_auroc"):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, key
    assert metrics["mode"] == "standard" and metrics["num_images"] == 8 and metrics["num_with_masks"] == 4
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)) == 8  # every test image scored exactly once
    scores, labels = [float(r["score"]) for r in rows], [int(r["label"]) for r in rows]
    assert metrics["image_auroc"] == pytest.approx(image_auroc(scores, labels))
    assert metrics["image_ap"] == pytest.approx(image_ap(scores, labels))
    dices = [float(r["dice"]) for r in rows if r["dice"]]
    assert len(dices) == 4 and metrics["pixel_dice"] == pytest.approx(np.mean(dices))
    for name in ("report.md", "roc.png", "pr.png", "montage.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "image_auroc" in report and "roc.png" in report and "Zero-shot" not in report
    point = json.loads((out / "threshold.json").read_text())
    assert point["score_threshold"] == pytest.approx(metrics["best_f1"]["threshold"])
    assert point["mask_threshold"] == pytest.approx(metrics["pixel_best_threshold"])


def test_operating_point_selected_after_training_is_used_and_reported(demo_root, model_path, tmp_path):
    """models/threshold.json from the post-training selection sets the score rule and the mask rule."""
    out = tmp_path / "eval"
    out.mkdir()
    selected = {"score_rule": "lung_p99", "mask_relative": 0.3, "restrict_to_lungs": True,
                "selected_on": "validation monitor (test)"}
    (out / "threshold.json").write_text(json.dumps(selected))
    _evaluate(demo_root, out, model_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["score_rule"] == "lung_p99"
    assert "max(0.03, 0.3 x per-image max)" in metrics["mask_rule"] and "within the lungs" in metrics["mask_rule"]
    assert metrics["operating_point"] == {**selected, "file": str(out / "threshold.json")}
    assert "chosen on validation monitor (test), never on this test set" in (out / "report.md").read_text()
    published = tmp_path / "published"
    published.mkdir()
    (published / "threshold.json").write_text(json.dumps(selected))
    _evaluate(demo_root, published, model_path, eval_rules="published")  # the file is ignored
    metrics = json.loads((published / "metrics.json").read_text())
    assert metrics["score_rule"] == "mean" and metrics["operating_point"] is None
    assert metrics["mask_rule"] == "|image - recon| >= max(0.03, 0.2 x per-image max)"


def test_zero_shot_layout_reports_pixel_metrics_only(demo_root, model_path, tmp_path):
    """QaTa-COV19 style: test/diseased + ground_truth only; one mask missing is reported, not replaced."""
    data = Path(shutil.copytree(demo_root, tmp_path / "qata"))
    shutil.rmtree(data / "train")
    shutil.rmtree(data / "test" / "healthy")
    masks = sorted((data / "ground_truth").rglob("*.png"))
    masks[0].unlink()
    out = tmp_path / "eval"
    with pytest.warns(UserWarning, match="no ground-truth mask"):
        _evaluate(data, out, model_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "zero-shot"
    assert metrics["image_auroc"] is None and metrics["image_ap"] is None and metrics["best_f1"] is None
    assert isinstance(metrics["pixel_dice"], float) and isinstance(metrics["pixel_auroc"], float)
    assert metrics["num_images"] == 4 and metrics["num_with_masks"] == 3
    assert [Path(m).name for m in metrics["missing_masks"]] == [masks[0].name]
    assert not (out / "roc.png").exists()
    report = (out / "report.md").read_text()
    assert "Zero-shot mode" in report and "no ground-truth mask" in report
    assert "| image_auroc | n/a |" in report


def _item(image, recon, pred, label, mask=None, score=None, name="x.png"):
    image = MetaTensor(torch.as_tensor(image, dtype=torch.float32)[None], meta={"filename_or_obj": name})
    error = (image.as_tensor() - torch.as_tensor(recon, dtype=torch.float32)[None]) ** 2
    has_mask = mask is not None and label == 1
    return (
        {"label": torch.tensor(label), "mask": torch.as_tensor(mask if mask is not None else np.zeros_like(pred))[None],
         "has_mask": torch.tensor(int(has_mask))},
        {"image": image, "pred": torch.as_tensor(pred)[None], "error": error,
         "score": float(error.mean()) if score is None else score, "lungs_found": 2},
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
    report = AnomalyEvaluationReport(tmp_path, [{"image": "same.png", "label": 0}], FailureLog(tmp_path / "f"), progress=False)
    report.started()
    report.iteration_completed(SimpleNamespace(state=SimpleNamespace(batch=[b, b], output=[o, o])))
    with pytest.raises(RuntimeError, match="exactly once"):
        report.completed()


def test_evaluation_datalist_errors(tmp_path, demo_root):
    assert len(evaluation_datalist(demo_root, "test")) == 8
    with pytest.raises(ValueError, match="'validation' split is empty"):
        evaluation_datalist(demo_root, "validation")
