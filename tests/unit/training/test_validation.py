"""bundle/training/validation.py: the synthetic validation monitor's transforms and metrics, and the operating point
selected on it."""

from __future__ import annotations

import pytest
import torch

from tests.unit.training.training_inputs import RemovesBright, selection_batches


def test_validation_transforms_and_metrics(phantom):
    import numpy as np

    from bundle.training.validation import ImageAP, ImageAUROC, PixelDice, SeededTextureAnomalyd, ValidationItemsd

    p = phantom(size=64, seed=3)
    item = {
        "image": torch.as_tensor(p.image[None]),
        "lung": torch.as_tensor(p.lung[None]),
        "label": 1,
        "synthetic_seed": 7,
    }
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
    out = {
        "image": image,
        "pred": recon,
        "label": {"label": torch.tensor([0, 0, 1, 1]), "mask": mask, "has_mask": torch.tensor([0, 0, 1, 1])},
    }
    values = {}
    for name, metric in (("auroc", ImageAUROC()), ("ap", ImageAP()), ("dice", PixelDice())):
        metric.reset()
        metric.update((out["image"], out["pred"], out["label"]))
        values[name] = metric.compute()
    assert values == {"auroc": 1.0, "ap": 1.0, "dice": 1.0}
    empty = PixelDice()
    empty.reset()
    assert np.isnan(empty.compute())


def test_operating_point_selected_on_validation_data():
    from bundle.training.validation import chosen_candidates, select_operating_point

    point = select_operating_point(RemovesBright(), selection_batches(), smoothings=[0.0])
    auroc = point["score_auroc"]
    # the whole-image mean ranks the bright healthy strips above the lesions; the lung rules rank perfectly
    assert auroc["mean, smoothing=0"] == 0.0 and auroc["p99, smoothing=0"] == 0.75
    assert auroc["lung_mean, smoothing=0"] == auroc["lung_p99, smoothing=0"] == 1.0
    assert (point["score_rule"], point["score_smoothing"]) == ("lung_mean", 0.0)  # first of the tied best
    dice = {k.removesuffix(", floor=0.03, polarity=absolute"): v for k, v in point["mask_dice"].items()}
    assert dice["relative=0.2, lungs=false, smoothing=0"] < 1.0  # the published mask also marks the strip
    assert (
        dice["relative=0.2, lungs=true, smoothing=0"] == 1.0 and dice["relative=0.4, lungs=false, smoothing=0"] == 1.0
    )
    assert (point["mask_relative"], point["restrict_to_lungs"]) == (0.4, False)  # the first with Dice 1
    assert (point["mask_floor"], point["mask_polarity"]) == (0.03, "absolute")  # the published ones win the tie
    assert chosen_candidates(point) == (
        "lung_mean, smoothing=0",
        "relative=0.4, lungs=false, smoothing=0, floor=0.03, polarity=absolute",
    )
    assert (point["num_healthy"], point["num_diseased"], point["num_with_masks"]) == (4, 4, 4)
    # smoothing candidates: every one is measured, and the choice is one of them
    smoothed = select_operating_point(RemovesBright(), selection_batches(), smoothings=[0.0, 0.05])
    assert "lung_p99, smoothing=0.05" in smoothed["score_auroc"] and smoothed["score_smoothing"] in (0.0, 0.05)
    assert "relative=0.3, lungs=true, smoothing=0.05, floor=0.05, polarity=brighter" in smoothed["mask_dice"]
    with pytest.raises(ValueError, match="healthy and diseased"):
        select_operating_point(RemovesBright(), selection_batches()[:1])


def test_brighter_polarity_chosen_when_the_reconstruction_is_brighter_than_normal_anatomy():
    """A network that also paints a bright line into the lungs (brighter than the image there): the absolute
    difference marks that line in every diseased image, only-brighter-than-the-reconstruction does not."""
    from bundle.training.validation import select_operating_point

    class PaintsALine(RemovesBright):
        def forward(self, x):
            out = super().forward(x).clone()
            out[:, :, 10] += 0.5
            return out

    point = select_operating_point(PaintsALine(), selection_batches(), smoothings=[0.0], score_rules=["lung_max"])
    dice = point["mask_dice"]
    for relative in (0.2, 0.5):
        lesion_only = f"relative={relative:g}, lungs=true, smoothing=0, floor=0.03, polarity=brighter"
        with_line = f"relative={relative:g}, lungs=true, smoothing=0, floor=0.03, polarity=absolute"
        assert dice[lesion_only] == 1.0 and dice[with_line] < 0.5
    assert point["mask_polarity"] == "brighter"
