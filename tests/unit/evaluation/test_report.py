"""Reports and pictures (bundle/evaluation/report.py): CSV text, overlays, ROC/PR plots, the Markdown report."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from bundle.evaluation.report import (
    DISPLAY_MAX_DIFF,
    csv_text,
    markdown_report,
    overlay_image,
    plot_roc_pr,
)


def test_csv_text_header_order_empty_cells_and_ignored_keys():
    rows = [{"file": "a.png", "score": 0.5, "dice": None, "extra": 1}, {"score": 2, "file": "b,c.png"}]
    text = csv_text(rows, ["file", "score", "dice"])
    assert text.splitlines()[0] == "file,score,dice" and text.endswith("\n") and "\r" not in text
    assert list(csv.reader(io.StringIO(text)))[1:] == [["a.png", "0.5", ""], ["b,c.png", "2", ""]]
    assert csv_text([], ["x"]) == "x\n"


def _grey(h=64, w=48, value=0.5) -> np.ndarray:
    return np.full((1, h, w), value, np.float32)


def test_overlay_without_error_or_mask_is_the_grey_image():
    out = overlay_image(_grey(value=0.4), np.zeros((64, 48), np.float32))
    assert out.shape == (64, 48, 3) and out.dtype == np.uint8
    assert (out == round(0.4 * 255)).all()


def test_overlay_heat_map_only_where_the_error_is():
    error = np.zeros((64, 48), np.float32)
    error[10:30, 10:30] = DISPLAY_MAX_DIFF**2  # squared error at full display colour
    out = overlay_image(_grey(), error).astype(int)
    hot, cold = out[20, 20], out[50, 40]
    assert (cold == 128).all()
    assert hot[0] > hot[2] + 40 and hot[0] > 128, f"full error should be a warm inferno colour, got {hot}"
    half = error.copy()
    half[10:30, 10:30] = (DISPLAY_MAX_DIFF / 4) ** 2
    weak = overlay_image(_grey(), half).astype(int)[20, 20]
    assert np.abs(weak - 128).sum() < np.abs(hot - 128).sum(), "a smaller error must be drawn more faintly"


def test_overlay_mask_outline_is_cyan_and_resized():
    mask = np.zeros((32, 24), np.uint8)  # half the image size: resized (nearest) to the image
    mask[8:24, 6:18] = 1
    out = overlay_image(_grey(), np.zeros((16, 12), np.float32), mask)
    cyan = (out[..., 0] == 0) & (out[..., 1] == 255) & (out[..., 2] == 255)
    rows, cols = np.nonzero(cyan)
    assert cyan.any() and rows.min() == 16 and rows.max() == 47 and cols.min() == 12 and cols.max() == 35
    assert not cyan[32, 24] and not cyan[5, 5], "only the outline is drawn, not the inside or the background"


def test_overlay_downscales_to_max_size():
    out = overlay_image(np.zeros((200, 100), np.float32), np.zeros((200, 100), np.float32), max_size=50)
    assert out.shape == (50, 25, 3)
    assert overlay_image(np.zeros((200, 100), np.float32), np.zeros((20, 10)), max_size=None).shape == (200, 100, 3)


def test_plot_roc_pr_writes_two_pngs(tmp_path):
    roc, pr = tmp_path / "roc.png", tmp_path / "sub" / "pr.png"
    pr.parent.mkdir()
    assert plot_roc_pr([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], roc, pr) == (roc, pr)
    for path in (roc, pr):
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) > 100
    assert plot_roc_pr([0.1, 0.2], [1, 1], tmp_path / "r2.png", tmp_path / "p2.png") is None
    assert not (tmp_path / "r2.png").exists() and not (tmp_path / "p2.png").exists()


METRICS = {
    "mode": "full",
    "num_images": 8,
    "num_healthy": 4,
    "num_diseased": 4,
    "num_with_masks": 4,
    "score_rule": "mean_error",
    "mask_rule": "error > 0.1",
    "image_auroc": 0.875,
    "image_ap": None,
    "pixel_dice": 0.5,
    "best_f1": {"threshold": 0.0123, "f1": 0.8, "precision": 0.75, "recall": 0.857},
    "pixel_best_threshold": 0.05,
}


def test_markdown_report_table_operating_point_and_files():
    files = {"roc": "roc.png", "pr": "pr.png", "montage": "cases.png", "per_image": "per_image.csv"}
    text = markdown_report(METRICS, files, notes=["2 masks missing"])
    lines = text.splitlines()
    assert lines[0] == "# Anomaly detection evaluation" and text.endswith("\n") and not text.endswith("\n\n")
    assert "| image_auroc | 0.8750 |" in lines and "| image_ap | n/a |" in lines and "| pixel_auroc | n/a |" in lines
    assert "8 (4 healthy, 4 diseased, 4 with ground-truth masks)" in text and "`mean_error`" in text
    assert "score >= 0.0123 gives F1 0.800 (precision 0.750, recall 0.857)" in text
    assert "Best pooled-Dice pixel threshold on |image - recon|: 0.05." in lines
    assert "- 2 masks missing" in lines and "![ROC](roc.png) ![PR](pr.png)" in lines
    assert "![montage](cases.png)" in lines and "Per-image results: [per_image.csv](per_image.csv)" in lines
    assert "Zero-shot" not in text


def test_markdown_report_zero_shot_and_no_pictures():
    text = markdown_report({**METRICS, "mode": "zero-shot", "best_f1": None, "pixel_best_threshold": None}, {})
    assert "**Zero-shot mode**" in text and "not reported" in text
    assert "![" not in text and "operating point" not in text and "pixel threshold" not in text


@pytest.mark.parametrize("value, shown", [(0.123456, "0.1235"), (3, "3"), (None, "n/a")])
def test_markdown_report_number_format(value, shown):
    assert f"| pixel_dice | {shown} |" in markdown_report({**METRICS, "pixel_dice": value}, {}).splitlines()
