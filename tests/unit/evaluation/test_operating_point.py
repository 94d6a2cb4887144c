"""bundle/evaluation/operating_point.py: defaults, file round trip, calibration and the mask rule text."""

from __future__ import annotations

import json

import pytest

from bundle.evaluation.operating_point import (
    DEFAULT_RELATIVE_THRESHOLD,
    calibrated_operating_point,
    describe_mask_rule,
    describe_point_mask,
    load_operating_point,
    save_operating_point,
    with_defaults,
)


def test_missing_file_means_the_published_rules(tmp_path):
    assert load_operating_point(None) == {} and load_operating_point(tmp_path / "none.json") == {}
    rules = with_defaults({})
    assert rules["score_rule"] == "mean" and rules["mask_relative"] == DEFAULT_RELATIVE_THRESHOLD
    assert rules["mask_threshold"] is None and rules["restrict_to_lungs"] is False and rules["score_smoothing"] == 0.0
    assert (rules["mask_floor"], rules["mask_polarity"]) == (0.03, "absolute")


def test_round_trip_and_file_values_win_over_defaults(tmp_path):
    point = {"score_rule": "lung_p99", "score_smoothing": 0.01, "mask_relative": 0.25, "restrict_to_lungs": True}
    path = save_operating_point(tmp_path / "models" / "threshold.json", point)
    assert load_operating_point(path) == point
    rules = with_defaults(load_operating_point(path))
    assert (rules["score_rule"], rules["mask_relative"], rules["restrict_to_lungs"]) == ("lung_p99", 0.25, True)


def test_a_file_that_is_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "threshold.json"
    path.write_text(json.dumps([0.1, 0.2]))
    with pytest.raises(ValueError, match="threshold.json: expected a JSON object"):
        load_operating_point(path)


def test_calibration_needs_labels_or_masks():
    metrics = {"num_images": 4, "best_f1": {"threshold": 0.5, "f1": 0.8}, "pixel_best_threshold": None}
    point = calibrated_operating_point("validation", metrics, "p99", 0.02)
    assert point["score_threshold"] == 0.5 and "mask_threshold" not in point and point["score_rule"] == "p99"
    with pytest.raises(ValueError, match="cannot calibrate on the 'test' split"):
        calibrated_operating_point("test", {"num_images": 2, "best_f1": None, "pixel_best_threshold": None}, "mean")


def test_mask_rule_text():
    assert describe_mask_rule() == "|image - recon| >= max(0.03, 0.2 x per-image max)"
    assert describe_mask_rule(0.07) == "|image - recon| >= 0.07"
    text = describe_mask_rule(relative=0.25, restrict_to_lungs=True, lung_dilation=0.03, smoothing=0.02)
    assert text == (
        "|image - recon| >= max(0.03, 0.25 x per-image max) within the lungs dilated by 0.03 x size, "
        "|image - recon| smoothed by a Gaussian of sigma 0.02 x size"
    )


def test_the_mask_rule_of_an_operating_point_in_words():
    assert describe_point_mask({}) == "|image - recon| >= max(0.03, 0.2 x per-image max)"
    point = {"mask_relative": 0.3, "restrict_to_lungs": True, "mask_floor": 0.05, "mask_polarity": "brighter"}
    assert describe_point_mask(point, 0.04) == (
        "max(image - recon, 0) >= max(0.05, 0.3 x per-image max) within the lungs dilated by 0.04 x size"
    )
