"""The ART-ASyn training loss: local and global MSE, bottleneck feature alignment and a soft Dice term.

Published loss (ALGORITHM.md section 3): ``2 x local MSE + global MSE + feature alignment + Dice``. The
published Dice thresholds the error map (no gradient, so the term did nothing); here it is a soft Dice on
``sigmoid((|input - recon| - threshold) / temperature)``, which does train the error map to light up exactly
on the synthetic anomaly and stay dark elsewhere (including on the healthy copies in the batch).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_LOSS_WEIGHTS", "soft_error_mask", "feature_alignment", "soft_dice_loss", "ARTASynLoss"]

#: published weights of the four terms (local MSE counts twice, so anomalous pixels weigh 3x in total).
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"local_mse": 2.0, "global_mse": 1.0, "feature": 1.0, "dice": 1.0}


def soft_error_mask(image: torch.Tensor, recon: torch.Tensor, threshold: float = 0.03, temperature: float = 0.01):
    """Differentiable anomaly mask from the reconstruction error.

    Args:
        image: network input (possibly anomalous), (B, 1, H, W) in [0, 1].
        recon: reconstruction, (B, 1, H, W).
        threshold: absolute intensity difference at which a pixel counts as anomalous (0.5 output there);
            0.03 is the floor of the inference mask rule ``|input - recon| >= max(0.03, 0.2 x max)``.
        temperature: softness of the step; smaller is closer to the hard threshold (and has less gradient).

    Returns:
        (B, 1, H, W) soft mask in (0, 1).
    """
    return torch.sigmoid(((image - recon).abs() - threshold) / temperature)


def feature_alignment(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Per-sample ``1 - cosine similarity`` of flattened, L2-normalised feature maps.

    Args:
        features: (B, ...) bottleneck features of the network inputs.
        target_features: (B, ...) bottleneck features of each input's healthy target, same shape.

    Returns:
        (B,) values in [0, 2]; 0 when the two feature maps point the same way.
    """
    if features.shape != target_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(features.shape)} vs {tuple(target_features.shape)}.")
    a = F.normalize(features.flatten(1).float(), dim=1)
    b = F.normalize(target_features.flatten(1).float(), dim=1)
    return 1.0 - (a * b).sum(dim=1)


def soft_dice_loss(pred: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - Dice`` pooled over the whole batch, so healthy samples (empty masks) penalise false positives.

    Args:
        pred: (B, 1, H, W) soft mask in [0, 1].
        mask: (B, 1, H, W) binary ground truth.
        smooth: additive smoothing in numerator and denominator (pixels).
    """
    pred, mask = pred.float(), mask.float()
    inter = (pred * mask).sum()
    return 1.0 - (2.0 * inter + smooth) / (pred.sum() + mask.sum() + smooth)


class ARTASynLoss(nn.Module):
    """Weighted sum of the ART-ASyn loss terms; every term is returned as well, for logging.

    Terms (names are the keys of ``weights``):
        - ``global_mse``: mean over pixels of ``(target - recon)^2``;
        - ``local_mse``: mean over pixels of ``(target - recon)^2 * anomaly_mask``;
        - ``feature``: mean over samples of ``1 - cos(f(input), f(target))`` on the UNet bottleneck;
        - ``dice``: soft Dice loss between :func:`soft_error_mask` and the anomaly mask.

    Args:
        weights: weights by term name; missing names keep the published default (:data:`DEFAULT_LOSS_WEIGHTS`),
            a weight of 0 switches a term off (it is then not computed). Unknown names raise ``ValueError``.
        dice_threshold: ``threshold`` of :func:`soft_error_mask`.
        dice_temperature: ``temperature`` of :func:`soft_error_mask`.
        dice_smooth: smoothing of :func:`soft_dice_loss`.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        dice_threshold: float = 0.03,
        dice_temperature: float = 0.01,
        dice_smooth: float = 1.0,
    ) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown loss weight name(s) {unknown}; valid names are {sorted(DEFAULT_LOSS_WEIGHTS)}.")
        self.weights = {**DEFAULT_LOSS_WEIGHTS, **{k: float(v) for k, v in weights.items()}}
        for name, w in self.weights.items():
            if w < 0:
                raise ValueError(f"loss weight {name!r} must be >= 0, got {w}.")
        if dice_temperature <= 0:
            raise ValueError(f"dice_temperature must be > 0, got {dice_temperature}.")
        self.dice_threshold = dice_threshold
        self.dice_temperature = dice_temperature
        self.dice_smooth = dice_smooth

    @property
    def needs_features(self) -> bool:
        """Whether the feature-alignment term is on (the trainer then collects bottleneck features)."""
        return self.weights["feature"] > 0

    def forward(
        self,
        recon: torch.Tensor,
        target: torch.Tensor,
        image: torch.Tensor,
        anomaly_mask: torch.Tensor,
        features: torch.Tensor | None = None,
        target_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            recon: network output, (B, 1, H, W).
            target: healthy image, (B, 1, H, W) in [0, 1].
            image: network input (anomalous or healthy), (B, 1, H, W) in [0, 1].
            anomaly_mask: (B, 1, H, W) 0/1 synthetic anomaly mask (all zero for healthy inputs).
            features: (B, ...) bottleneck features of ``image``; needed when the ``feature`` weight is > 0.
            target_features: (B, ...) bottleneck features of ``target``, paired by index with ``features``.

        Returns:
            dict with ``loss`` (weighted total, scalar) and one unweighted scalar per term name; terms with
            weight 0 are not computed and reported as 0.
        """
        recon = recon.float()
        target = target.float()
        mask = anomaly_mask.float()
        zero = recon.new_zeros(())
        sq = (target - recon) ** 2
        terms: dict[str, torch.Tensor] = {
            "global_mse": sq.mean() if self.weights["global_mse"] > 0 else zero,
            "local_mse": (sq * mask).mean() if self.weights["local_mse"] > 0 else zero,
            "feature": zero,
            "dice": zero,
        }
        if self.needs_features:
            if features is None or target_features is None:
                raise ValueError("the 'feature' loss term needs bottleneck features of the input and its target.")
            terms["feature"] = feature_alignment(features, target_features).mean()
        if self.weights["dice"] > 0:
            soft = soft_error_mask(image.float(), recon, self.dice_threshold, self.dice_temperature)
            terms["dice"] = soft_dice_loss(soft, mask, self.dice_smooth)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms}
