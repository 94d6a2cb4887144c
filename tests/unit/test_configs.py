"""The configs' chains: written once in train.json, and configs/inference.json's own copy (MONAI Label reads that
file alone) gives what the train.json chain gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser

from bundle.data.phantoms import make_phantom
from bundle.io import write_png

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _parser(*files: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    for key, value in overrides.items():
        parser[key] = value
    return parser


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "ds" / "train" / "healthy" / "a.png"
    write_png(path, make_phantom(192, seed=3).image, bits=16)
    return path


def test_inference_preprocessing_equals_the_train_json_chain(image_file: Path):
    common = dict(image_size=128, lung_cache_dir=None)
    train = _parser("train.json", **common, dataset_dir=str(image_file.parents[2]))
    steps = [train.get_parsed_content(f"preprocessing#{k}") for k in ("load_image", "lungs", "resize")]
    ours = {"image": str(image_file)}
    for step in steps:
        ours = step(ours)
    theirs = _parser("inference.json", **common).get_parsed_content("preprocessing")({"image": str(image_file)})
    assert set(theirs) >= {"image", "lung"}
    np.testing.assert_array_equal(np.asarray(theirs["image"]), np.asarray(ours["image"]))
    np.testing.assert_array_equal(np.asarray(theirs["lung"]), np.asarray(ours["lung"]))
    assert np.asarray(ours["lung"]).max() == 2  # both lungs: the comparison is not between two empty maps


def test_each_chain_refers_to_the_common_steps():
    train = _parser("train.json")
    for chain in ("train#preprocessing", "validate#preprocessing"):
        steps = train[chain]["transforms"]
        assert "@preprocessing#load_image" in steps and "@preprocessing#resize" in steps, chain
    evaluate = _parser("train.json", "evaluate.json")
    assert "@preprocessing#lungs" in evaluate["validate#preprocessing"]["transforms"]
    assert train["run"] == "%training" and evaluate["run"] == "%evaluating"


def test_inference_postprocessing_equals_the_evaluation_chain(tmp_path: Path):
    """Both read models/threshold.json the same way and turn one reconstruction into the same score and mask."""
    import json

    import torch

    (tmp_path / "models").mkdir()
    point = {"score_rule": "lung_p99", "score_smoothing": 0.01, "mask_relative": 0.3, "restrict_to_lungs": True}
    (tmp_path / "models" / "threshold.json").write_text(json.dumps(point))
    phantom = make_phantom(64, seed=1)
    image = torch.from_numpy(phantom.image[None]).float()
    recon = (image + 0.2 * torch.rand_like(image)).clamp(0, 1)
    lung = torch.from_numpy(phantom.lung[None].astype("uint8"))

    def run(chain, n_steps):
        out = {"image": image.clone(), "pred": recon.clone(), "lung": lung.clone()}
        for step in chain.transforms[:n_steps]:
            out = step(out)
        return out

    evaluate = _parser("train.json", "evaluate.json", bundle_root=str(tmp_path), dataset_dir=str(tmp_path))
    ours = run(evaluate.get_parsed_content("validate#postprocessing"), 4)
    inference = _parser("inference.json", bundle_root=str(tmp_path))
    theirs = run(inference.get_parsed_content("postprocessing"), 4)  # the steps before the inversion to the input size
    assert evaluate.get_parsed_content("mask_rule") == inference.get_parsed_content("mask_rule")
    assert "within the lungs" in inference.get_parsed_content("mask_rule")  # the file's choice was applied
    assert ours["score"] == pytest.approx(theirs["score"])
    torch.testing.assert_close(ours["error"], theirs["error"])
    assert torch.equal(ours["pred"], theirs["pred"]) and ours["pred"].any()
