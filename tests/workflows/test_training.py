"""Training workflow: batch pairing, the trainer iteration, handlers, configs and real `monai.bundle` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import UNet

from bundle.training.engine import ARTASynIteration, pair_with_targets, prepare_artasyn_batch
from bundle.training.handlers import TensorBoardImageGrid, WeightEMA, latest_checkpoint
from bundle.training.losses import ARTASynLoss

REPO = Path(__file__).resolve().parents[2]


def _tiny_unet():
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _group_batch(n_images=2, variants=(2, 1), size=16, with_healthy=True, seed=0):
    """A flattened batch like list_data_collate makes it: per image [healthy copy,] variants..."""
    g = torch.Generator().manual_seed(seed)
    images, targets, masks = [], [], []
    for i in range(n_images):
        healthy = torch.rand(1, size, size, generator=g) * 0.5
        if with_healthy:
            images.append(healthy.clone()), targets.append(healthy.clone()), masks.append(torch.zeros_like(healthy))
        for _ in range(variants[i]):
            m = (torch.rand(1, size, size, generator=g) > 0.8).float()
            images.append(healthy + 0.3 * m), targets.append(healthy.clone()), masks.append(m)
    return {"image": torch.stack(images), "target": torch.stack(targets), "anomaly_mask": torch.stack(masks)}


def test_pairing_uses_healthy_copies_in_the_batch():
    b = _group_batch(variants=(2, 1))  # rows: H0 V V H1 V
    extra, source = pair_with_targets(b["image"], b["target"])
    assert extra.shape[0] == 0
    assert source.tolist() == [0, 0, 0, 3, 3]


def test_pairing_appends_missing_targets():
    b = _group_batch(variants=(2, 1), with_healthy=False)  # rows: V V V (two groups, no healthy copy)
    extra, source = pair_with_targets(b["image"], b["target"])
    assert extra.shape[0] == 2
    assert source[0] == source[1] and source[0] != source[2]
    full = torch.cat([b["image"], extra])
    for i in range(3):
        assert torch.equal(full[source[i]], b["target"][i])


def test_prepare_batch_defaults_for_plain_reconstruction():
    img = torch.rand(2, 1, 8, 8)
    image, target, mask = prepare_artasyn_batch({"image": img})
    assert torch.equal(target, image) and mask.sum() == 0
    with pytest.raises(KeyError, match="image"):
        prepare_artasyn_batch({"target": img})


def _trainer(net, loss, batches, epochs=1, handlers=None):
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
        loss_function=loss,
        prepare_batch=prepare_artasyn_batch,
        iteration_update=ARTASynIteration(),
        train_handlers=handlers,
        decollate=False,
    )


def test_iteration_trains_all_terms_and_reports_them():
    torch.manual_seed(0)
    net = _tiny_unet()
    before = [p.detach().clone() for p in net.parameters()]
    batches = [_group_batch(seed=s) for s in range(3)]
    trainer = _trainer(net, ARTASynLoss(), batches)
    trainer.run()
    out = trainer.state.output
    assert set(out["loss_terms"]) == {"loss", "global_mse", "local_mse", "feature", "dice"}
    assert all(torch.isfinite(v) for v in out["loss_terms"].values())
    assert out["loss_terms"]["feature"] > 0  # the variants' features differ from their healthy copy's
    assert out["pred"].shape == out["image"].shape == (5, 1, 16, 16)
    assert trainer.state.iteration == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_iteration_with_ema_and_image_grid(tmp_path):
    torch.manual_seed(0)
    net = _tiny_unet()
    ema = WeightEMA(net, decay=0.5, enabled=True)
    writer = torch.utils.tensorboard.SummaryWriter(str(tmp_path))
    grid = TensorBoardImageGrid(summary_writer=writer, interval=2)
    trainer = _trainer(net, ARTASynLoss(weights={"feature": 0}), [_group_batch(seed=s) for s in range(2)])
    from bundle.training.handlers import EMAUpdate

    EMAUpdate(ema).attach(trainer)
    grid.attach(trainer)
    trainer.run()
    writer.close()
    # EMA differs from the trained weights after two updates with decay 0.5, and is a plain UNet state dict
    ema_sd, net_sd = ema.network.state_dict(), net.state_dict()
    assert ema_sd.keys() == net_sd.keys()
    assert any(not torch.allclose(ema_sd[k], net_sd[k]) for k in net_sd if ema_sd[k].is_floating_point())
    g = TensorBoardImageGrid.grid(trainer.state.output, max_rows=3)
    assert g.shape == (1, 3 * 16, 5 * 16) and 0 <= g.min() and g.max() <= 1
    assert list(tmp_path.glob("events.out.tfevents*"))


def test_ema_disabled_is_the_network_itself():
    net = _tiny_unet()
    ema = WeightEMA(torch.nn.DataParallel(net), enabled=False)
    assert ema.network is net and ema.state_dict() == {}
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(net, decay=1.0)


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    for name in ["checkpoint_iteration=5.pt", "checkpoint_iteration=40.pt", "checkpoint_final_iteration=12.pt", "x.pt"]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_iteration=40.pt")


# ---------------------------------------------------------------- configs/train.json, in process and as real runs

CONFIG = str(REPO / "configs" / "train.json")
MULTI = str(REPO / "configs" / "multi_gpu_train.json")
META = str(REPO / "configs" / "metadata.json")
LOGGING = str(REPO / "configs" / "logging.conf")
# tiny, fast settings: 8 demo images of 128 px resized to 32 px (a multiple of the UNet's total stride 16), a small
# UNet, epochs of 3 iterations
FAST = {"image_size": 32, "num_workers": 0, "val_interval": 1, "batch_size": 2, "epoch_length": 3,
        "num_iterations": 6, "network_def#channels": [8, 16, 32, 64, 128]}


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
    for required in ("bundle_root", "device", "dataset_dir", "network_def", "network", "train#trainer",
                     "train#trainer#max_epochs", "train#dataset", "train#preprocessing", "train#handlers",
                     "train#inferer", "validate#evaluator", "validate#dataset", "val_interval", "ckpt_dir",
                     "output_dir", "training", "run", "initialize", "finalize"):
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
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", "1" if torchrun else "2")
    head = [sys.executable, "-m", "monai.bundle", "run"]
    if torchrun:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                f"--nproc_per_node={torchrun}", "-m", "monai.bundle", "run"]
    proc = subprocess.run(head + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return proc


def _overrides(bundle_root: Path, dataset_dir: Path, **kw) -> list[str]:
    out = ["--meta_file", META, "--logging_file", LOGGING, "--bundle_root", str(bundle_root),
           "--dataset_dir", str(dataset_dir)]
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

    proc = _run(["training", "--config_file", CONFIG]
                + _overrides(root, demo_root, **{"num_iterations": 9, "resume": "true"}), cwd=tmp_path)
    assert "resumed from" in proc.stdout + proc.stderr and "iteration 6" in proc.stdout + proc.stderr
    assert (root / "runs" / "train" / "checkpoints" / "checkpoint_final_iteration=9.pt").is_file()


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, demo_root):
    root = tmp_path / "bundle"
    config = f"['{CONFIG}','{MULTI}']"
    proc = _run(["training", "--config_file", config] + _overrides(root, demo_root, epoch_length=2, num_iterations=4),
                cwd=tmp_path, torchrun=2)
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


def test_validation_transforms_and_metrics(phantom):
    import numpy as np

    from bundle.training.validation import ImageAP, ImageAUROC, PixelDice, SeededTextureAnomalyd, ValidationItemsd

    p = phantom(size=64, seed=3)
    item = {"image": torch.as_tensor(p.image[None]), "lung": torch.as_tensor(p.lung[None]), "label": 1,
            "synthetic_seed": 7}
    a, b = SeededTextureAnomalyd()(dict(item)), SeededTextureAnomalyd()(dict(item))
    assert torch.equal(a["image"], b["image"]) and a["mask"].sum() > 0  # fixed per seed
    no_lung = SeededTextureAnomalyd()({**item, "lung": torch.zeros_like(item["lung"])})
    assert ValidationItemsd()(no_lung)["label"] == -1  # empty anomaly: left out of the metrics
    healthy = ValidationItemsd()({"image": item["image"], "label": 0})
    assert healthy["has_mask"] == 0 and healthy["mask"].sum() == 0 and healthy["label"] == 0

    # metrics on hand-made outputs: recon = image except a bright blob in the diseased images
    image = torch.zeros(4, 1, 16, 16)
    image[2:, :, 4:8, 4:8] = 0.8
    recon = torch.zeros_like(image)
    mask = (image > 0).float()
    out = {"image": image, "pred": recon, "label": {"label": torch.tensor([0, 0, 1, 1]), "mask": mask,
                                                     "has_mask": torch.tensor([0, 0, 1, 1])}}
    values = {}
    for name, metric in (("auroc", ImageAUROC()), ("ap", ImageAP()), ("dice", PixelDice())):
        metric.reset()
        metric.update((out["image"], out["pred"], out["label"]))
        values[name] = metric.compute()
    assert values == {"auroc": 1.0, "ap": 1.0, "dice": 1.0}
    empty = PixelDice()
    empty.reset()
    assert np.isnan(empty.compute())


class _RemovesBright(torch.nn.Module):
    """Stand-in reconstruction network: keeps pixels below 0.25 and zeroes the rest (it "removes" bright things)."""

    def forward(self, x):
        return x * (x < 0.25)


def _selection_batches():
    """Healthy images with a bright strip outside the lungs (normal anatomy the network cannot rebuild, brighter
    from image to image) and diseased images with a faint strip and a small lesion inside the lungs."""
    n, size = 4, 16
    image = torch.full((2 * n, 1, size, size), 0.1)
    lung = torch.zeros_like(image)
    lung[:, :, 4:12, 2:14] = 1
    mask = torch.zeros_like(image)
    for i in range(n):
        image[i, :, :2] = 0.6 + 0.12 * i  # healthy: error outside the lungs only
        image[n + i, :, :2] = 0.3
        image[n + i, :, 6:8, 6:8] = 0.9  # diseased: a 2 x 2 lesion in the lungs
        mask[n + i, :, 6:8, 6:8] = 1
    labels = torch.tensor([0] * n + [1] * n)
    batch = {"image": image, "lung": lung, "mask": mask, "label": labels, "has_mask": labels.clone()}
    return [{k: v[:n] for k, v in batch.items()}, {k: v[n:] for k, v in batch.items()}]


def test_operating_point_selected_on_validation_data():
    from bundle.training.validation import select_operating_point

    point = select_operating_point(_RemovesBright(), _selection_batches(), smoothings=[0.0])
    auroc = point["score_auroc"]
    # the whole-image mean ranks the bright healthy strips above the lesions; the lung rules rank perfectly
    assert auroc["mean, smoothing=0"] == 0.0 and auroc["p99, smoothing=0"] == 0.75
    assert auroc["lung_mean, smoothing=0"] == auroc["lung_p99, smoothing=0"] == 1.0
    assert (point["score_rule"], point["score_smoothing"]) == ("lung_mean", 0.0)  # first of the tied best
    dice = point["mask_dice"]
    assert dice["relative=0.2, lungs=false, smoothing=0"] < 1.0  # the published mask also marks the strip
    assert dice["relative=0.2, lungs=true, smoothing=0"] == 1.0 and dice["relative=0.4, lungs=false, smoothing=0"] == 1.0
    assert (point["mask_relative"], point["restrict_to_lungs"]) == (0.4, False)  # the first with Dice 1
    assert (point["num_healthy"], point["num_diseased"], point["num_with_masks"]) == (4, 4, 4)
    # smoothing candidates: every one is measured, and the choice is one of them
    smoothed = select_operating_point(_RemovesBright(), _selection_batches(), smoothings=[0.0, 0.05])
    assert "lung_p99, smoothing=0.05" in smoothed["score_auroc"] and smoothed["score_smoothing"] in (0.0, 0.05)
    assert "relative=0.3, lungs=true, smoothing=0.05" in smoothed["mask_dice"]
    with pytest.raises(ValueError, match="healthy and diseased"):
        select_operating_point(_RemovesBright(), _selection_batches()[:1])


def test_select_operating_point_handler_writes_the_choice(tmp_path):
    from bundle.training.handlers import SelectOperatingPoint

    net = _tiny_unet()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    batches = _selection_batches()
    for b in batches:  # the tiny UNet takes 16 x 16 images (stride 2 x 2)
        b["image"] = b["image"].clamp(0, 1)
    out = tmp_path / "threshold.json"
    handler = SelectOperatingPoint(_tiny_unet(), batches, tmp_path / "model.pt", out, mode="validation")
    point = handler()
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(point)) and saved["weights"] == "model.pt"
    assert f"{saved['score_rule']}, smoothing={saved['score_smoothing']:g}" in saved["score_auroc"]
    assert {"mask_relative", "mask_smoothing", "restrict_to_lungs"} <= set(saved)
    assert "Infinity" not in out.read_text()  # strict JSON
    from ignite.engine import Engine, Events

    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    published = SelectOperatingPoint(net, batches, out, out, mode="published")
    published.attach(engine)
    assert engine.has_event_handler(handler, Events.COMPLETED)
    assert not engine.has_event_handler(published, Events.COMPLETED)  # published rules: nothing is selected
    with pytest.raises(ValueError, match="rule_selection"):
        SelectOperatingPoint(net, batches, out, out, mode="sometimes")


def test_defaults_are_the_published_recipe():
    """configs/train.json alone is the published recipe (ALGORITHM.md section 3), with a MONAI UNet of its capacity."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIG)
    get = parser.get_parsed_content
    net = get("network_def")
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 6.52e6) / 6.52e6 < 0.01  # published UNet: 6.52 M; MONAI UNet 32-512, 2 res units: 6.49 M
    assert list(parser["network_def"]["channels"]) == [32, 64, 128, 256, 512] and get("network_def#num_res_units") == 2
    assert get("num_iterations") == 100000 and get("epoch_length") == 1000
    assert get("train#trainer#max_epochs") * get("epoch_length") == 100000
    assert (get("learning_rate"), get("weight_decay"), get("lr_policy"), get("use_ema")) == (1e-4, 0.0, "constant", False)
    assert (get("batch_size"), list(get("num_variants")), get("include_healthy"), get("image_size")) == (4, [1, 3], True, 256)
    assert get("ckpt_interval") == 5000 and get("val_interval") * get("epoch_length") == 5000


def test_synthetic_monitor_stays_in_training(demo_root):
    from bundle.training.data import training_split

    split = training_split(demo_root, val_fraction=0.25, seed=0)
    train = {e["image"] for e in split["training"]}
    monitor = {e["image"] for e in split["validation"]}
    assert len(train) == 8 and len(monitor) == 2 and monitor <= train  # every healthy image trains
    assert sorted(e["label"] for e in split["validation"]) == [0, 0, 1, 1]
    held = training_split(demo_root, val_fraction=0.25, seed=0, hold_out=True)
    assert len(held["training"]) == 6 and not ({e["image"] for e in held["training"]} & monitor)


def test_lr_policy():
    from bundle.training.data import LRPolicy

    const = LRPolicy("constant", num_iterations=100)
    assert [const(i) for i in (0, 50, 99, 500)] == [1.0, 1.0, 1.0, 1.0]
    cos = LRPolicy("cosine", num_iterations=100, warmup_iterations=10)
    assert cos(0) == pytest.approx(0.1, abs=1e-3) and cos(9) == pytest.approx(0.980, abs=0.001)
    assert cos(50) == pytest.approx(0.5, abs=1e-6) and cos(100) == pytest.approx(0.0, abs=1e-9)
    assert all(cos(i) >= cos(i + 1) for i in range(10, 100))
    with pytest.raises(ValueError, match="lr_policy must be one of"):
        LRPolicy("step")
    # the scheduler state (the policy's fields) survives a checkpoint round trip
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cos)
    for _ in range(30):
        opt.step()
        sched.step()
    opt2 = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, LRPolicy("cosine", num_iterations=100, warmup_iterations=10))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


# The README quick start measured image AUROC 0.909 and pixel Dice 0.463 on the demo test set (README "Training":
# evaluation rules chosen on the synthetic monitor at the end of training; the targets are 0.90 / 0.50, so
# Dice is still short). The thresholds sit a little below the measured values, so that run-to-run variation
# (thread scheduling changes the float summation order) does not fail the test while a real regression does.
QUICK_START_MIN = {"image_auroc": 0.87, "pixel_dice": 0.43}


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
