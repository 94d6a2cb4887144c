"""Training workflow: batch pairing, the trainer iteration, handlers, configs and real `monai.bundle` runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.workflows.bundle_run import run_bundle

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- configs/train.json, in process and as real runs

CONFIG = str(REPO / "configs" / "train.json")
MULTI = str(REPO / "configs" / "multi_gpu_train.json")
META = str(REPO / "configs" / "metadata.json")
LOGGING = str(REPO / "configs" / "logging.conf")
# tiny, fast settings: 8 demo images of 128 px resized to 32 px (a multiple of the UNet's total stride 16), a small
# UNet, epochs of 3 iterations
FAST = {
    "image_size": 32,
    "num_workers": 0,
    "val_interval": 1,
    "batch_size": 2,
    "epoch_length": 3,
    "num_iterations": 6,
    "network_def#channels": [8, 16, 32, 64, 128],
}


def _workflow(tmp_path, dataset_dir, **override):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=CONFIG,
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        bundle_root=str(tmp_path / "bundle"),
        dataset_dir=str(dataset_dir),
        **{**FAST, **override},
    )
    wf.initialize()
    return wf


def _chain(err: BaseException) -> str:
    text = []
    while err is not None:
        text.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(text)


def test_check_properties_and_ids(tmp_path, demo_root):
    wf = _workflow(tmp_path, demo_root)
    assert wf.check_properties() == []
    for required in (
        "bundle_root",
        "device",
        "dataset_dir",
        "network_def",
        "network",
        "train#trainer",
        "train#trainer#max_epochs",
        "train#dataset",
        "train#preprocessing",
        "train#handlers",
        "train#inferer",
        "validate#evaluator",
        "validate#dataset",
        "val_interval",
        "ckpt_dir",
        "output_dir",
        "training",
        "run",
        "initialize",
        "finalize",
    ):
        assert required in wf.parser, required
    assert wf.parser["run"] == wf.parser["training"]
    # MONAI Label supplies a `label` (a segmentation file) with every training item: it is dropped
    train_item = wf.parser.get_parsed_content("data")["training"][0]
    samples = wf.parser.get_parsed_content("train#preprocessing")({**train_item, "label": "some/label.png"})
    assert 2 <= len(samples) <= 4  # healthy copy + 1..3 variants
    for s in samples:
        assert set(s) == {"image", "target", "anomaly_mask"} and s["image"].shape == (1, 32, 32)
        assert torch.equal(s["target"], samples[0]["image"])
    assert samples[0]["anomaly_mask"].sum() == 0 and any(s["anomaly_mask"].sum() > 0 for s in samples[1:])


@pytest.mark.parametrize(
    "override, message",
    [
        ({"image_size": 40}, "not divisible by the UNet's total stride 16"),
        ({"loss_weights#dise": 1.0}, "unknown loss weight name"),
        ({"dataset_dir": "/nonexistent/dataset"}, "does not exist: /nonexistent/dataset"),
        ({"dataset_dir": ""}, "dataset_dir is not set"),
    ],
)
def test_bad_config_fails_early(tmp_path, demo_root, override, message):
    with pytest.raises(Exception) as info:
        wf = _workflow(tmp_path, override.pop("dataset_dir", demo_root), **override)
        wf.parser.get_parsed_content("train#trainer")
    assert message in _chain(info.value)


def test_no_training_images_fails_early(tmp_path):
    (tmp_path / "empty" / "train" / "healthy").mkdir(parents=True)
    with pytest.raises(Exception) as info:
        _workflow(tmp_path, tmp_path / "empty").parser.get_parsed_content("train#trainer")
    assert "DatalistError" in _chain(info.value) and "train/healthy: empty folder" in _chain(info.value)


def _run(args: list[str], cwd: Path, timeout: int = 480, torchrun: int = 0) -> subprocess.CompletedProcess:
    return run_bundle(args, cwd, torchrun=torchrun, timeout=timeout, threads="1" if torchrun else "2")


def _overrides(bundle_root: Path, dataset_dir: Path, **kw) -> list[str]:
    out = [
        "--meta_file",
        META,
        "--logging_file",
        LOGGING,
        "--bundle_root",
        str(bundle_root),
        "--dataset_dir",
        str(dataset_dir),
    ]
    for key, value in {**FAST, **kw}.items():
        out += [f"--{key}", str(value)]
    return out


def _fresh_network_def(**override):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser.update(override)
    return parser.get_parsed_content("network_def")


@pytest.mark.slow
def test_real_training_run_then_resume(tmp_path, demo_root):
    root = tmp_path / "bundle"
    proc = _run(["training", "--config_file", CONFIG] + _overrides(root, demo_root), cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "no diseased validation images" in log and "synthetic anomaly" in log
    model = root / "models" / "model.pt"
    assert model.is_file()
    net = _fresh_network_def(**{"network_def#channels": [8, 16, 32, 64, 128]})
    net.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))  # plain state dict
    assert list((root / "runs" / "train" / "tensorboard").glob("events.out.tfevents*"))
    ckpts = sorted(p.name for p in (root / "runs" / "train" / "checkpoints").glob("*.pt"))
    # the length is in iterations (num_iterations), whatever the number of images: 2 epochs of 3
    assert ckpts == ["checkpoint_final_iteration=6.pt"]

    proc = _run(
        ["training", "--config_file", CONFIG] + _overrides(root, demo_root, **{"num_iterations": 9, "resume": "true"}),
        cwd=tmp_path,
    )
    assert "resumed from" in proc.stdout + proc.stderr and "iteration 6" in proc.stdout + proc.stderr
    assert (root / "runs" / "train" / "checkpoints" / "checkpoint_final_iteration=9.pt").is_file()


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, demo_root):
    root = tmp_path / "bundle"
    config = f"['{CONFIG}','{MULTI}']"
    proc = _run(
        ["training", "--config_file", config] + _overrides(root, demo_root, epoch_length=2, num_iterations=4),
        cwd=tmp_path,
        torchrun=2,
    )
    log = proc.stdout + proc.stderr
    net = _fresh_network_def(**{"network_def#channels": [8, 16, 32, 64, 128]})
    net.load_state_dict(torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True))
    # DistributedSampler: 8 images over 2 ranks = 4 each, batch 2; 2 epochs of 2 iterations
    assert (root / "runs" / "train" / "checkpoints" / "checkpoint_final_iteration=4.pt").is_file()
    # rank 0 alone logs validation and writes TensorBoard
    assert log.count("Key metric: val_image_auroc") == 2
    assert len(list((root / "runs" / "train" / "tensorboard").glob("events.out.tfevents*"))) == 1


def test_offline_variants_switch(tmp_path, demo_copy):
    """`--synthesis offline` trains on the variants the `synthesize` job wrote, grouped with their healthy image."""
    import numpy as np

    from bundle.data.layout import variant_paths
    from bundle.io import read_image, write_png

    healthy = sorted((demo_copy / "train" / "healthy").glob("*.png"))
    for i, path in enumerate(healthy[:-1]):  # the last image has no variants
        img = read_image(path)[0]
        for k in range(1, 1 + i % 3 + 1):
            v, m = variant_paths(path, demo_copy, demo_copy / "synthetic", k)
            mask = np.zeros(img.shape, np.uint8)
            mask[20 * k : 20 * k + 30, 30:60] = 1
            v.parent.mkdir(parents=True, exist_ok=True)
            write_png(v, np.clip(img + 0.3 * mask, 0, 1), bits=16)
            write_png(m, mask)
    wf = _workflow(tmp_path, demo_copy, synthesis="offline")
    data = wf.parser.get_parsed_content("data")
    assert all("variants" in e for e in data["training"]) and len(data["training"]) == 8
    preprocessing = wf.parser.get_parsed_content("train#preprocessing")
    entry = next(e for e in data["training"] if len(e["variants"]) == 3)
    samples = preprocessing(entry)
    assert len(samples) == 4
    assert torch.equal(samples[0]["image"], samples[0]["target"]) and samples[0]["anomaly_mask"].sum() == 0
    for s in samples[1:]:
        assert s["image"].shape == s["anomaly_mask"].shape == (1, 32, 32)
        assert s["anomaly_mask"].sum() > 0 and torch.equal(s["target"], samples[0]["target"])
        inside = s["anomaly_mask"].bool()
        assert (s["image"] - s["target"])[inside].mean() > 0.1  # the variant is the brighter, anomalous one
    empty = next(e for e in data["training"] if not e["variants"])
    assert len(preprocessing(empty)) == 1


def test_offline_without_variants_fails_early(tmp_path, demo_root):
    with pytest.raises(Exception) as info:
        _workflow(tmp_path, demo_root, synthesis="offline").parser.get_parsed_content("data")
    assert "no offline anomaly variants" in _chain(info.value)
    with pytest.raises(Exception) as info:
        _workflow(tmp_path, demo_root, synthesis="sometimes").parser.get_parsed_content("data")
    assert "synthesis must be one of" in _chain(info.value)


# The README quick start measured image AUROC 0.928 and pixel Dice 0.504 on the demo test set (README "Training":
# evaluation rules chosen on the synthetic monitor at the end of training; the targets are 0.90 / 0.50).
# The thresholds sit a little below the measured values, so that run-to-run variation (thread scheduling changes
# the float summation order) does not fail the test while a real regression does.
QUICK_START_MIN = {"image_auroc": 0.87, "pixel_dice": 0.49}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_start_demo_recipe_end_to_end(tmp_path):
    """The README's first command (train with configs/demo.json, evaluate on the demo test set) end to end."""
    root = tmp_path / "bundle"
    demo = str(REPO / "configs" / "demo.json")
    common = ["--meta_file", META, "--logging_file", LOGGING, "--bundle_root", str(root)]
    _run(["training", "--config_file", f"['{CONFIG}','{demo}']", *common], cwd=tmp_path, timeout=1500)
    evaluate = str(REPO / "configs" / "evaluate.json")
    _run(["evaluating", "--config_file", f"['{CONFIG}','{demo}','{evaluate}']", *common], cwd=tmp_path, timeout=300)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    for key, minimum in QUICK_START_MIN.items():
        assert metrics[key] >= minimum, f"{key} {metrics[key]:.3f} < {minimum} ({metrics})"
