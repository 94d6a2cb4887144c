"""bundle/training/engine.py: batch pairing (healthy copies beside their variants) and the trainer iteration."""

from __future__ import annotations

import pytest
import torch

from bundle.training.engine import pair_with_targets, prepare_artasyn_batch
from bundle.training.losses import ARTASynLoss
from tests.unit.training.training_inputs import group_batch, tiny_unet, trainer_for


def test_pairing_uses_healthy_copies_in_the_batch():
    b = group_batch(variants=(2, 1))  # rows: H0 V V H1 V
    extra, source = pair_with_targets(b["image"], b["target"])
    assert extra.shape[0] == 0
    assert source.tolist() == [0, 0, 0, 3, 3]


def test_pairing_appends_missing_targets():
    b = group_batch(variants=(2, 1), with_healthy=False)  # rows: V V V (two groups, no healthy copy)
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


def test_iteration_trains_all_terms_and_reports_them():
    torch.manual_seed(0)
    net = tiny_unet()
    before = [p.detach().clone() for p in net.parameters()]
    batches = [group_batch(seed=s) for s in range(3)]
    trainer = trainer_for(net, ARTASynLoss(), batches)
    trainer.run()
    out = trainer.state.output
    assert set(out["loss_terms"]) == {"loss", "global_mse", "local_mse", "feature", "dice"}
    assert all(torch.isfinite(v) for v in out["loss_terms"].values())
    assert out["loss_terms"]["feature"] > 0  # the variants' features differ from their healthy copy's
    assert out["pred"].shape == out["image"].shape == (5, 1, 16, 16)
    assert trainer.state.iteration == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
