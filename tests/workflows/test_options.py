"""Every boolean option of every config, through real ``python -m monai.bundle run`` processes, with ``false`` and
with ``true`` (spelled as a user would on the command line), and its effect checked.

``COVERED`` lists each (config, option) with the effect checked; ``tests/unit/test_options.py`` fails when a config
gains a boolean option that is not listed here. Each workflow runs few, tiny processes (32 px images, a few
iterations) that set all its boolean options at once, one process per value, so every option is run both ways
at the cost of two or three runs per config.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.workflows.bundle_run import run_bundle

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

_TRAIN_EFFECTS = {
    "include_healthy": "training batches with / without the healthy copy (rows of the TensorBoard image grid)",
    "use_ema": "EMA weights in the training checkpoint and in models/model.pt, or none",
    "resume": "continues from the newest checkpoint (counters, best-model record) or starts afresh beside it",
    "select_best_model": "models/model.pt = models/model_best.pt, or the final weights",
    "amp": "mixed precision on / off in the training iteration (on CPU: requested, and off)",
}
COVERED: dict[tuple[str, str], str] = {
    **{("train.json", k): v for k, v in _TRAIN_EFFECTS.items()},
    **{("multi_gpu_train.json", k): v for k, v in _TRAIN_EFFECTS.items()},
    ("evaluate.json", "calibrate"): "models/threshold.json rewritten by calibration, or left byte for byte",
    ("evaluate.json", "restrict_to_lungs"): "mask rule within the dilated lungs, or the whole image",
    ("evaluate.json", "fail_on_skipped"): "exit status 2 or 0 with an unreadable test image",
    ("inference.json", "write_error_maps"): "<name>_error.tiff written or not",
    ("inference.json", "write_overlays"): "<name>_overlay.png written or not",
    ("inference.json", "restrict_to_lungs"): "masks inside the dilated lungs (a strict subset) or not",
    ("inference.json", "fail_on_skipped"): "exit status 2 or 0 with an unreadable image",
    ("preprocess.json", "include_test"): "lung maps of test/ written or not",
    ("preprocess.json", "overwrite"): "existing lung maps recomputed or kept",
    ("preprocess.json", "progress"): "progress bar shown or not",
    ("preprocess.json", "pbtseg#border_brightening"): "lung maps of healthy images change or not",
    ("preprocess.json", "pbtseg#fill_holes"): "lung maps of diseased images change or not",
}
# boolean config values that are not user options
INTERNAL: dict[tuple[str, str], str] = {
    ("train.json", "is_main_rank"): "set by multi_gpu_train.json from the process rank (logging/saving on rank 0)",
    ("multi_gpu_train.json", "is_main_rank"): "computed from the process rank",
}

# tiny training: 32 px, 1 healthy image + 1 variant (+ the healthy copy), 2 iterations per epoch, validation at
# epoch 2 only, so the final weights (epoch 3) differ from the validated ones
TRAIN_FAST = {
    "image_size": 32,
    "num_workers": 0,
    "batch_size": 1,
    "num_variants": "[1, 1]",
    "val_interval": 2,
    "val_batch_size": 4,
    "train#trainer#epoch_length": 2,
    "train#trainer#max_epochs": 3,
    "image_log_interval": 1,
    "log_interval": 1,
    "ckpt_interval": 0,
}
GRID_TAG = "train/target_input_mask_recon_error"


def _run(args: list[str], cwd: Path, expect: int = 0, torchrun: int = 0, timeout: int = 600) -> str:
    """The run's log (stdout + stderr), after checking its exit status."""
    proc = run_bundle(args, cwd, expect=expect, torchrun=torchrun, timeout=timeout)
    return proc.stdout + proc.stderr


def _flags(config: str, value: str, **extra) -> list[str]:
    """``--option value`` for every covered boolean option of ``config`` (so a newly covered one is run too)."""
    out = []
    for (name, option), _ in COVERED.items():
        if name == config:
            out += [f"--{option}", extra.pop(option, value)]
    for key, v in extra.items():
        out += [f"--{key}", str(v)]
    return out


def _grid_heights(tb_dir: Path) -> set[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    heights = set()
    for events in tb_dir.glob("events.out.tfevents*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        if GRID_TAG in acc.Tags()["images"]:
            heights |= {img.height for img in acc.Images(GRID_TAG)}
    return heights


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _ema_weights(ckpt: dict) -> dict:
    """The EMA network's state dict inside a training checkpoint (AveragedModel: ``module.`` keys)."""
    return {k[len("module.") :]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}


def _final_ckpt(root: Path) -> tuple[int, dict]:
    found = sorted(
        (int(p.stem.split("=")[1]), p)
        for p in (root / "runs" / "train" / "checkpoints").glob("checkpoint_final_iteration=*.pt")
    )
    assert found, "no final training checkpoint"
    return found[-1][0], _state(found[-1][1])


def _train_args(config: list[str], root: Path, dataset: Path, tb: str, **kw) -> list[str]:
    files = "[" + ",".join(f"'{CONFIGS / c}'" for c in config) + "]"
    out = [
        "training",
        "--config_file",
        files,
        "--meta_file",
        META,
        "--logging_file",
        LOGGING,
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(dataset),
        "--tb_dir",
        str(root / tb),
    ]
    for key, value in {**TRAIN_FAST, **kw}.items():
        out += [f"--{key}", str(value)]
    return out


def _check_training(config: list[str], tmp_path: Path, dataset: Path, torchrun: int = 0) -> None:
    """Three runs in one bundle root: all false; all true but resume false (checkpoints beside it are ignored);
    all true with resume true and select_best_model true (continues from the second run)."""
    name = config[-1]
    root = tmp_path / "bundle"
    models = root / "models"

    # 1. every boolean option false
    log_f = _run(_train_args(config, root, dataset, "tb_false") + _flags(name, "false"), tmp_path, torchrun=torchrun)
    it_f, ckpt_f = _final_ckpt(root)
    assert it_f == 6 and "resumed from" not in log_f
    assert ckpt_f["ema"] == {}  # use_ema false: no EMA
    assert _same(_state(models / "model.pt"), ckpt_f["model"])  # select_best_model false: final weights ...
    assert not _same(_state(models / "model_best.pt"), ckpt_f["model"])  # ... not the validated (epoch 2) ones
    assert _grid_heights(root / "tb_false") == {32}  # include_healthy false: 1 sample per batch
    assert "mixed precision: off." in log_f  # amp false

    # 2. every boolean option true except resume (and select_best_model, checked in run 3): fresh start
    log_t = _run(
        _train_args(config, root, dataset, "tb_true") + _flags(name, "True", resume="no", select_best_model="0"),
        tmp_path,
        torchrun=torchrun,
    )
    it_t, ckpt_t = _final_ckpt(root)
    assert it_t == 6 and "resumed from" not in log_t  # resume false: ckpt of run 1 beside it not used
    assert ckpt_t["ema"] and not _same(_ema_weights(ckpt_t), ckpt_t["model"])  # use_ema true
    assert _same(_state(models / "model.pt"), _ema_weights(ckpt_t))  # the EMA weights are what is saved
    assert _grid_heights(root / "tb_true") == {64}  # include_healthy true: healthy copy + variant
    assert ("mixed precision: on." if torch.cuda.is_available() else "mixed precision: requested (amp true)") in log_t
    record_t = json.loads((models / "model_best.json").read_text())
    best_t = (models / "model_best.pt").read_bytes()

    # 3. resume true (2 more epochs, validated at epoch 4) with select_best_model true
    log_r = _run(
        _train_args(config, root, dataset, "tb_resume", **{"train#trainer#max_epochs": 5}) + _flags(name, "yes"),
        tmp_path,
        torchrun=torchrun,
    )
    it_r, _ = _final_ckpt(root)
    assert "resumed from" in log_r and "iteration 6" in log_r and it_r == 10
    assert f"best val_image_auroc {record_t['value']:.6g}" in log_r  # the record came back with the checkpoint
    record_r = json.loads((models / "model_best.json").read_text())
    replaced = (models / "model_best.pt").read_bytes() != best_t
    assert record_r["value"] >= record_t["value"]
    assert replaced == (record_r["iteration"] == 8)
    assert replaced == ("does not beat" not in log_r)  # kept exactly when the resumed validation was not better
    assert (models / "model.pt").read_bytes() == (models / "model_best.pt").read_bytes()  # select_best_model


@pytest.mark.slow
def test_train_boolean_options(tmp_path, demo_root):
    _check_training(["train.json"], tmp_path, demo_root)


@pytest.mark.slow
def test_multi_gpu_boolean_options(tmp_path, demo_root):
    """Two CPU processes (gloo); 6 training images over 2 ranks with epoch_length 2 keep the iteration counts."""
    _check_training(["train.json", "multi_gpu_train.json"], tmp_path, demo_root, torchrun=2)


# ---------------------------------------------------------------------------------------------- evaluate / inference


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("options_model") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


@pytest.mark.slow
def test_evaluate_boolean_options(tmp_path, demo_copy, random_model):
    healthy = sorted((demo_copy / "test" / "healthy").glob("*.png"))[0]
    healthy.write_bytes(healthy.read_bytes()[:300])  # readable header, truncated pixels: skipped at loading
    threshold = tmp_path / "threshold.json"
    threshold.write_text(json.dumps({"mask_threshold": 0.05, "score_threshold": 0.01, "note": "calibrated before"}))
    before = threshold.read_bytes()
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']"

    def args(out: str) -> list[str]:
        return [
            "evaluating",
            "--config_file",
            files,
            "--meta_file",
            META,
            "--dataset_dir",
            str(demo_copy),
            "--output_dir",
            str(tmp_path / out),
            "--ckpt_path",
            str(random_model),
            "--threshold_path",
            str(threshold),
            "--val_batch_size",
            "4",
            "--image_size",
            "64",
        ]

    _run(args("eval_false") + _flags("evaluate.json", "false"), tmp_path, expect=0)  # fail_on_skipped false
    assert threshold.read_bytes() == before  # calibrate false: threshold.json untouched
    metrics = json.loads((tmp_path / "eval_false" / "metrics.json").read_text())
    assert "0.05" in metrics["mask_rule"] and "within the lungs" not in metrics["mask_rule"]

    _run(args("eval_true") + _flags("evaluate.json", "TRUE"), tmp_path, expect=2)  # fail_on_skipped true
    point = json.loads(threshold.read_text())
    assert "note" not in point and 0 <= point["mask_threshold"] <= 1  # calibrate true: written by calibration
    metrics = json.loads((tmp_path / "eval_true" / "metrics.json").read_text())
    assert "within the lungs" in metrics["mask_rule"] and metrics["failed"]


@pytest.mark.slow
def test_inference_boolean_options(tmp_path, demo_root, random_model):
    from bundle.io import read_labels

    data = tmp_path / "images"
    data.mkdir()
    for p in sorted((demo_root / "test" / "diseased").glob("*.png"))[:2]:
        shutil.copy(p, data / p.name)
    (data / "broken.png").write_bytes(b"not a png")
    threshold = tmp_path / "threshold.json"  # a fixed mask threshold: the restricted mask is then a subset
    threshold.write_text(json.dumps({"mask_threshold": 0.02}))

    def args(out: str) -> list[str]:
        return [
            "--config_file",
            str(CONFIGS / "inference.json"),
            "--meta_file",
            META,
            "--dataset_dir",
            str(data),
            "--output_dir",
            str(tmp_path / out),
            "--ckpt_path",
            str(random_model),
            "--threshold_path",
            str(threshold),
            "--image_size",
            "64",
        ]

    _run(args("false") + _flags("inference.json", "False"), tmp_path, expect=0)
    _run(args("true") + _flags("inference.json", "Yes"), tmp_path, expect=2)
    names = [p.stem for p in sorted(data.glob("*.png")) if p.stem != "broken"]
    smaller = 0
    for stem in names:
        assert not (tmp_path / "false" / f"{stem}_error.tiff").exists()
        assert not (tmp_path / "false" / f"{stem}_overlay.png").exists()
        assert (tmp_path / "true" / f"{stem}_error.tiff").stat().st_size > 0
        assert (tmp_path / "true" / f"{stem}_overlay.png").stat().st_size > 0
        whole = read_labels(tmp_path / "false" / f"{stem}_mask.png").astype(bool)
        lungs = read_labels(tmp_path / "true" / f"{stem}_mask.png").astype(bool)
        assert not (lungs & ~whole).any()  # restricted: a subset of the unrestricted mask ...
        smaller += int(lungs.sum() < whole.sum())
    assert smaller == len(names)  # ... and strictly smaller (the untrained network errs everywhere)


# ---------------------------------------------------------------------------------------------- preprocess


@pytest.mark.slow
def test_preprocess_boolean_options(tmp_path, demo_copy):
    from bundle.io import read_labels

    out = tmp_path / "lungs"

    def run(expect: int = 0, **values) -> tuple[str, dict, dict]:
        log = _run(
            [
                "lungs",
                "--config_file",
                str(CONFIGS / "preprocess.json"),
                "--meta_file",
                META,
                "--dataset_dir",
                str(demo_copy),
                "--output_dir",
                str(out),
                "--num_workers",
                "0",
            ]
            + _flags("preprocess.json", "false", **values),
            tmp_path,
            expect=expect,
        )
        report = json.loads((out / "lungs_report.json").read_text())["summary"]
        maps = {p.relative_to(out).as_posix(): read_labels(p) for p in out.rglob("*.png") if p.name != "lungs_qa.png"}
        return log, report, maps

    log1, report1, maps1 = run(include_test="true", progress="true")
    assert any(k.startswith("test/") for k in maps1) and any(k.startswith("train/") for k in maps1)
    assert re.search(r"lungs: +\d+%\|", log1)  # progress true: tqdm bar

    log2, report2, maps2 = run()
    assert not re.search(r"lungs: +\d+%\|", log2)  # progress false: no bar
    assert report2["total"] == sum(k.startswith("train/") for k in maps1)  # include_test false: train only
    assert report2["done"] == 0 and report2["skipped"] == report2["total"]  # overwrite false: maps kept
    assert all(np.array_equal(maps2[k], maps1[k]) for k in maps1)

    # other PBTSeg parameters without overwrite: refused (the cache's stamp is of the first run's), nothing touched
    log, _, maps = run(expect=1, **{"pbtseg#border_brightening": "true", "pbtseg#fill_holes": "true"})
    assert "pbtseg_stamp.json" in log and "--overwrite true" in log
    assert all(np.array_equal(maps[k], maps1[k]) for k in maps1)

    _, report3, maps3 = run(include_test="1", overwrite="YES", **{"pbtseg#border_brightening": "true"})
    assert report3["done"] == report3["total"] == len(maps1)  # overwrite true: every map recomputed
    healthy = [k for k in maps1 if "/healthy/" in k]
    assert any(not np.array_equal(maps3[k], maps1[k]) for k in healthy)  # border_brightening true vs false

    _, _, maps4 = run(
        include_test="1", overwrite="YES", **{"pbtseg#border_brightening": "true", "pbtseg#fill_holes": "true"}
    )
    diseased = [k for k in maps1 if "/diseased/" in k]
    assert any(not np.array_equal(maps4[k], maps3[k]) for k in diseased)  # fill_holes true vs false
