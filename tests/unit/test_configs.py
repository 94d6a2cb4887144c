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
    point = {
        "score_rule": "lung_p99",
        "score_smoothing": 0.01,
        "mask_relative": 0.3,
        "restrict_to_lungs": True,
        "mask_floor": 0.05,
        "mask_polarity": "brighter",
    }
    (tmp_path / "models" / "threshold.json").write_text(json.dumps(point))
    phantom = make_phantom(64, seed=1)
    image = torch.from_numpy(phantom.image[None]).float()
    recon = (image + 0.4 * (torch.rand_like(image) - 0.5)).clamp(0, 1)
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
    rule = inference.get_parsed_content("mask_rule")  # the file's choices were applied
    assert rule.startswith("max(image - recon, 0) >= max(0.05, 0.3 x") and "within the lungs" in rule
    assert ours["score"] == pytest.approx(theirs["score"])
    torch.testing.assert_close(ours["error"], theirs["error"])
    assert torch.equal(ours["pred"], theirs["pred"]) and ours["pred"].any()


def test_defaults_are_the_published_recipe():
    """configs/train.json alone is the published recipe (ALGORITHM.md section 3), with a MONAI UNet of its capacity."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    get = parser.get_parsed_content
    net = get("network_def")
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 6.52e6) / 6.52e6 < 0.01  # published UNet: 6.52 M; MONAI UNet 32-512, 2 res units: 6.49 M
    assert list(parser["network_def"]["channels"]) == [32, 64, 128, 256, 512] and get("network_def#num_res_units") == 2
    assert get("num_iterations") == 100000 and get("epoch_length") == 1000
    assert get("train#trainer#max_epochs") * get("epoch_length") == 100000
    assert (get("learning_rate"), get("weight_decay"), get("lr_policy"), get("use_ema")) == (
        1e-4,
        0.0,
        "constant",
        False,
    )
    assert (get("batch_size"), list(get("num_variants")), get("include_healthy"), get("image_size")) == (
        4,
        [1, 3],
        True,
        256,
    )
    assert get("ckpt_interval") == 5000 and get("val_interval") * get("epoch_length") == 5000
