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

from bundle.engine import ARTASynIteration, pair_with_targets, prepare_artasyn_batch
from bundle.handlers import TensorBoardImageGrid, WeightEMA, latest_checkpoint
from bundle.losses import ARTASynLoss

REPO = Path(__file__).resolve().parents[1]


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
    from bundle.handlers import EMAUpdate

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
