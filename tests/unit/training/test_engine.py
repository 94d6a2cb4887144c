"""bundle/training/engine.py: batch pairing (healthy copies beside their variants) and the trainer iteration."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import UNet

from bundle.training.engine import ARTASynIteration, pair_with_targets, prepare_artasyn_batch
from bundle.training.losses import ARTASynLoss


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
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
