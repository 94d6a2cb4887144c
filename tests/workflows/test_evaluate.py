"""configs/evaluate.json merged over train.json: metrics, reports, zero-shot mode, missing masks, calibration;
and the evaluation handler against hand-computed values."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

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
        "evaluating",
        config_file=CONFIGS,
        meta_file=META,
        dataset_dir=str(dataset_dir),
        output_dir=str(output_dir),
        ckpt_path=str(model),
        threshold_path=str(output_dir / "threshold.json"),
        val_batch_size=3,
        **overrides,
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
    selected = {
        "score_rule": "lung_p99",
        "mask_relative": 0.3,
        "restrict_to_lungs": True,
        "selected_on": "validation monitor (test)",
    }
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
