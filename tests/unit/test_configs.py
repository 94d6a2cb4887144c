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
