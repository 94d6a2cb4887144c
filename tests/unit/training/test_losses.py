"""The ART-ASyn loss terms on hand-made tensors (bundle/training/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.training.losses import (
    DEFAULT_LOSS_WEIGHTS,
    ARTASynLoss,
    feature_alignment,
    soft_dice_loss,
    soft_error_mask,
)


def _case():
    target = torch.zeros(2, 1, 4, 4)
    recon = torch.zeros(2, 1, 4, 4)
    recon[0, 0, 0, 0] = 0.5  # error 0.25 at one masked pixel
    recon[1, 0, 3, 3] = 1.0  # error 1.0 at one unmasked pixel
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 0, :2] = 1
    return recon, target, mask


def test_mse_terms_by_hand():
    recon, target, mask = _case()
    loss = ARTASynLoss(weights={"feature": 0, "dice": 0})
    out = loss(recon, target, target, mask)
    assert out["global_mse"].item() == pytest.approx((0.25 + 1.0) / 32)
    assert out["local_mse"].item() == pytest.approx(0.25 / 32)
    assert out["feature"].item() == 0 and out["dice"].item() == 0
    assert out["loss"].item() == pytest.approx(2 * 0.25 / 32 + 1.25 / 32)


def test_published_default_weights():
    assert DEFAULT_LOSS_WEIGHTS == {"local_mse": 2.0, "global_mse": 1.0, "feature": 1.0, "dice": 1.0}
    assert ARTASynLoss().weights == DEFAULT_LOSS_WEIGHTS
    assert ARTASynLoss(weights={"dice": 0.5}).weights["dice"] == 0.5


def test_feature_alignment_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    # scale-invariant (normalised): same direction 0, orthogonal 1, opposite 2
    assert feature_alignment(a, b).tolist() == pytest.approx([0.0, 1.0, 2.0])
    f = torch.rand(2, 3, 2, 2)
    assert feature_alignment(f, f * 5).abs().max() < 1e-6
    with pytest.raises(ValueError, match="shapes differ"):
        feature_alignment(f, f[:, :2])


def test_soft_dice_matches_hard_dice_in_the_limit_and_has_gradient():
    image = torch.zeros(1, 1, 8, 8)
    image[..., 2:4, 2:4] = 0.5  # anomaly: bright patch the reconstruction should remove
    mask = (image > 0).float()
    recon = torch.zeros(1, 1, 8, 8, requires_grad=True)
    soft = soft_error_mask(image, recon, threshold=0.03, temperature=0.001)
    # perfect reconstruction of the healthy image: error exactly on the mask -> Dice ~ 1
    assert soft_dice_loss(soft, mask, smooth=0.0).item() == pytest.approx(0.0, abs=1e-4)

    # near-identity: the anomaly is barely removed (error 0.01 < threshold) -> poor Dice
    recon2 = (image * 0.98).requires_grad_(True)
    loss = ARTASynLoss(weights={"local_mse": 0, "global_mse": 0, "feature": 0}, dice_temperature=0.01)
    out = loss(recon2, torch.zeros_like(image), image, mask)
    assert out["dice"].item() > 0.5
    out["loss"].backward()
    grad = recon2.grad
    assert grad is not None and grad.abs().sum() > 0
    # lowering recon inside the anomaly raises the error there, which lowers the loss: positive gradient
    assert (grad[mask.bool()] > 0).all()


def test_dice_pooled_over_batch_penalises_false_positives_on_healthy_samples():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, ..., :2, :2] = 1
    pred_clean = mask.clone()
    pred_fp = mask.clone()
    pred_fp[1] = 1  # lights up the whole healthy sample
    assert soft_dice_loss(pred_clean, mask).item() == pytest.approx(0.0)
    assert soft_dice_loss(pred_fp, mask).item() == pytest.approx(1 - (2 * 4 + 1) / (20 + 4 + 1))


def test_feature_term_uses_given_features():
    recon, target, mask = _case()
    feats = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    tgt = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    out = ARTASynLoss()(recon, target, target, mask, feats, tgt)
    assert out["feature"].item() == pytest.approx(0.5)
    out["loss"].backward()
    assert feats.grad is not None and feats.grad[0].abs().sum() > 0
    with pytest.raises(ValueError, match="bottleneck features"):
        ARTASynLoss()(recon, target, target, mask)


def test_bad_weights_fail_early():
    with pytest.raises(ValueError, match=r"unknown loss weight name\(s\) \['dise'\]; valid names are"):
        ARTASynLoss(weights={"dise": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        ARTASynLoss(weights={"dice": -1})
    with pytest.raises(ValueError, match="temperature"):
        ARTASynLoss(dice_temperature=0)


def test_total_is_weighted_sum():
    torch.manual_seed(0)
    recon, target, image = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    mask = (torch.rand(3, 1, 8, 8) > 0.7).float()
    f, g = torch.rand(3, 5), torch.rand(3, 5)
    w = {"local_mse": 0.3, "global_mse": 1.7, "feature": 0.2, "dice": 0.9}
    out = ARTASynLoss(weights=w)(recon, target, image, mask, f, g)
    expected = sum(w[k] * out[k].item() for k in w)
    assert math.isclose(out["loss"].item(), expected, rel_tol=1e-6)
