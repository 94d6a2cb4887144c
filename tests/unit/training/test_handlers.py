"""Training handlers (bundle/training/handlers.py): the saved models (final / best, the best-metric record across a
resume), the weight EMA, the checkpoint lookup and the logged loss terms."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from bundle.training.handlers import (
    ModelSaver,
    ResumeFromCheckpoint,
    SaveBestModel,
    SaveFinalModel,
    TensorBoardImageGrid,
    TrainingCheckpointSaver,
    WeightEMA,
    latest_checkpoint,
    loss_terms,
)
from bundle.training.losses import ARTASynLoss
from tests.unit.training.training_inputs import group_batch, selection_batches, tiny_unet, trainer_for


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def _trainer_with_validations(saver: ModelSaver, metrics: list[float], net: torch.nn.Module) -> Engine:
    """A trainer of len(metrics) epochs of 2 iterations that 'trains' by adding 1 to the weights and validates
    each epoch with the given key-metric values (a stand-in evaluator, as ValidationHandler runs it)."""
    values = iter(metrics)
    evaluator = Engine(lambda e, b: None)
    evaluator.state.key_metric_name = "val_image_auroc"

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_image_auroc"] = next(values)

    SaveBestModel(saver).attach(evaluator)

    def step(engine, batch):
        with torch.no_grad():
            net.weight += 1.0

    trainer = Engine(step)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0], max_epochs=1))
    SaveFinalModel(saver).attach(trainer)
    return trainer


def _weights(path: Path) -> torch.Tensor:
    return torch.load(path, weights_only=True)["weight"]


def test_final_weights_by_default_best_beside_them(tmp_path):
    net = _net(0)
    start = net.weight.detach().clone()
    saver = ModelSaver(net, tmp_path, select_best="false")
    _trainer_with_validations(saver, [0.7, 0.9, 0.8], net).run([0, 1], max_epochs=3)
    assert torch.allclose(_weights(tmp_path / "model.pt"), start + 6)  # final: 3 epochs x 2 iterations
    assert torch.allclose(_weights(tmp_path / "model_best.pt"), start + 4)  # best validation: epoch 2
    record = json.loads((tmp_path / "model_best.json").read_text())
    assert record["value"] == 0.9 and record["epoch"] == 2 and record["iteration"] == 4
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == {"weight", "bias"}  # plain state dict


def test_select_best_model_makes_model_pt_the_best(tmp_path):
    net = _net(0)
    start = net.weight.detach().clone()
    saver = ModelSaver(net, tmp_path, select_best="True")
    _trainer_with_validations(saver, [0.7, 0.9, 0.8], net).run([0, 1], max_epochs=3)
    assert torch.allclose(_weights(tmp_path / "model.pt"), start + 4)
    assert torch.allclose(_weights(tmp_path / "model_best.pt"), start + 4)


def test_resume_keeps_the_best_record(tmp_path):
    """Resumed through real training checkpoints: a worse validation keeps model_best.pt, a better one replaces it."""
    ckpts = tmp_path / "ckpt"

    def run(max_epochs, metrics, resume):
        net = _net(0)
        saver = ModelSaver(net, tmp_path / "models", select_best=True)
        trainer = _trainer_with_validations(saver, metrics, net)
        ResumeFromCheckpoint({"model": net, "model_saver": saver}, ckpts, resume=resume).attach(trainer)
        TrainingCheckpointSaver(ckpts, {"model": net, "model_saver": saver}, save_interval=0).attach(trainer)
        trainer.run([0, 1], max_epochs=max_epochs)
        return net, saver

    run(2, [0.6, 0.9], resume="no")  # best 0.9 at epoch 2 (iteration 4)
    best = (tmp_path / "models" / "model_best.pt").read_bytes()
    net, saver = run(4, [0.5, 0.85], resume="yes")  # resumes at epoch 2: epochs 3 and 4 are worse
    assert saver.best_metric == 0.9 and saver.best_iteration == 4
    assert (tmp_path / "models" / "model_best.pt").read_bytes() == best
    assert (tmp_path / "models" / "model.pt").read_bytes() == best  # select_best: model.pt is not replaced either
    net, saver = run(5, [0.95], resume="yes")  # epoch 5 is better
    assert saver.best_metric == 0.95 and saver.best_iteration == 10
    assert torch.equal(_weights(tmp_path / "models" / "model_best.pt"), net.weight.detach())


def test_resume_adopts_a_later_record_of_the_same_run(tmp_path):
    """A validation after the checkpoint the run resumes from (crash in between) is not lost."""
    net = _net(0)
    saver = ModelSaver(net, tmp_path)
    saver.best_metric, saver.best_iteration = 0.8, 10
    state = saver.state_dict()  # what the checkpoint at iteration 10 holds
    torch.save(net.state_dict(), tmp_path / "model_best.pt")
    (tmp_path / "model_best.json").write_text(
        json.dumps(
            {"key_metric": "val_image_auroc", "value": 0.9, "epoch": 3, "iteration": 15, "run_id": state["run_id"]}
        )
    )
    resumed = ModelSaver(_net(1), tmp_path)
    resumed.load_state_dict(state)
    assert resumed.best_metric == 0.9 and resumed.best_iteration == 15
    other = ModelSaver(_net(1), tmp_path)  # another run's record is not adopted
    other.load_state_dict({**state, "run_id": "another"})
    assert other.best_metric == 0.8


def test_old_checkpoint_without_record_resumes_with_a_warning(tmp_path, caplog):
    net = _net(0)
    trainer = Engine(lambda e, b: None)
    trainer.state.max_epochs = 5
    torch.save(
        {"model": net.state_dict(), "trainer": {"iteration": 2, "max_epochs": 1, "epoch_length": 2}},
        tmp_path / "old.pt",
    )
    saver = ModelSaver(net, tmp_path)
    loader = ResumeFromCheckpoint({"model": net, "model_saver": saver}, tmp_path, ckpt_path=str(tmp_path / "old.pt"))
    with caplog.at_level("WARNING"):
        loader.load(trainer, str(tmp_path / "old.pt"))
    assert trainer.state.iteration == 2 and saver.best_metric is None
    assert "holds no 'model_saver'" in caplog.text
    with pytest.raises(KeyError, match="not a training checkpoint"):
        ResumeFromCheckpoint({"model": net, "optimizer": net}, tmp_path).load(trainer, str(tmp_path / "old.pt"))


# ---------------------------------------------------------------------------------------------- EMA of weights


def _ema_run(values: list[float], decay: float, enabled: bool = True) -> tuple[torch.nn.Module, WeightEMA]:
    """Iteration k sets every weight to values[k]; the EMA updates after each iteration."""
    net = torch.nn.Linear(2, 1)
    ema = WeightEMA(net, decay=decay, enabled=enabled)

    def step(engine, batch):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(batch)

    trainer = Engine(step)
    ema.attach(trainer)
    trainer.run(values, max_epochs=1)
    return net, ema


def test_ema_update_math():
    # the first update takes the weights as they are; then ema = decay * ema + (1 - decay) * weights
    net, ema = _ema_run([1.0, 2.0, 3.0], decay=0.5)
    expected = (0.5 * 1.0 + 0.5 * 2.0) * 0.5 + 0.5 * 3.0
    assert torch.allclose(net.weight, torch.full_like(net.weight, 3.0))
    for p in ema.network.parameters():
        assert torch.allclose(p, torch.full_like(p, expected))
    _, slow = _ema_run([1.0, 2.0, 3.0], decay=0.9)
    w = slow.network.weight
    assert torch.allclose(w, torch.full_like(w, (0.9 * 1.0 + 0.1 * 2.0) * 0.9 + 0.1 * 3.0))


def test_ema_checkpoint_roundtrip_and_disabled():
    _, ema = _ema_run([1.0, 5.0], decay=0.75)
    fresh = WeightEMA(torch.nn.Linear(2, 1), decay=0.75, enabled="true")
    fresh.load_state_dict(ema.state_dict())
    assert torch.allclose(fresh.network.weight, ema.network.weight) and fresh.network.weight[0, 0] == 2.0
    net, off = _ema_run([1.0, 5.0], decay=0.75, enabled="false")
    assert off.network is net and off.state_dict() == {} and net.weight[0, 0] == 5.0
    off.load_state_dict(ema.state_dict())  # no EMA to restore: ignored
    assert net.weight[0, 0] == 5.0


def test_ema_from_a_checkpoint_without_ema_keeps_the_weights(caplog):
    net = torch.nn.Linear(2, 1)
    ema = WeightEMA(net, enabled=True)
    before = ema.network.weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        ema.load_state_dict({})
    assert torch.equal(ema.network.weight, before) and "no EMA weights" in caplog.text


# ---------------------------------------------------------------------------------------------- checkpoints, logs


def test_latest_checkpoint_by_number_then_time(tmp_path):
    for name in ["model.pt", "checkpoint_iteration=x.pt", "checkpoint_iteration=99.pth", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) is None, "no file named ...=<n>.pt"
    assert latest_checkpoint(tmp_path / "model.pt") is None, "a file is not a checkpoint folder"
    for name in ["checkpoint_iteration=9.pt", "checkpoint_iteration=10.pt"]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_iteration=10.pt"), "numbers, not text, compare"
    older, newer = tmp_path / "checkpoint_final_iteration=10.pt", tmp_path / "checkpoint_iteration=10.pt"
    older.write_bytes(b"")
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    assert latest_checkpoint(tmp_path) == str(newer), "same number: the newer file wins"
    os.utime(newer, ns=(500_000_000, 500_000_000))
    assert latest_checkpoint(tmp_path) == str(older)


def test_loss_terms_for_the_stats_handlers():
    output = {
        "loss": torch.tensor(9.0),
        "loss_terms": {"loss": torch.tensor(1.5), "mse": torch.tensor(0.5), "dice": 0.25},
    }
    terms = loss_terms(output)
    assert terms == {"loss": 1.5, "loss/mse": 0.5, "loss/dice": 0.25}
    assert all(type(v) is float for v in terms.values())


def test_iteration_with_ema_and_image_grid(tmp_path):
    torch.manual_seed(0)
    net = tiny_unet()
    ema = WeightEMA(net, decay=0.5, enabled=True)
    writer = torch.utils.tensorboard.SummaryWriter(str(tmp_path))
    grid = TensorBoardImageGrid(summary_writer=writer, interval=2)
    trainer = trainer_for(net, ARTASynLoss(weights={"feature": 0}), [group_batch(seed=s) for s in range(2)])
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
    net = tiny_unet()
    ema = WeightEMA(torch.nn.DataParallel(net), enabled=False)
    assert ema.network is net and ema.state_dict() == {}
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(net, decay=1.0)


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    for name in ["checkpoint_iteration=5.pt", "checkpoint_iteration=40.pt", "checkpoint_final_iteration=12.pt", "x.pt"]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_iteration=40.pt")


def test_select_operating_point_handler_writes_the_choice(tmp_path):
    from bundle.training.handlers import SelectOperatingPoint

    net = tiny_unet()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    batches = selection_batches()
    for b in batches:  # the tiny UNet takes 16 x 16 images (stride 2 x 2)
        b["image"] = b["image"].clamp(0, 1)
    out = tmp_path / "threshold.json"
    handler = SelectOperatingPoint(tiny_unet(), batches, tmp_path / "model.pt", out, mode="validation")
    point = handler()
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(point)) and saved["weights"] == "model.pt"
    assert f"{saved['score_rule']}, smoothing={saved['score_smoothing']:g}" in saved["score_auroc"]
    assert {"mask_relative", "mask_smoothing", "restrict_to_lungs", "mask_floor", "mask_polarity"} <= set(saved)
    assert handler.lung_dilation == 0.03  # the default restriction, which the log line describes
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
