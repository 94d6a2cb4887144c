"""From a reconstruction to anomaly maps, image scores and binary anomaly masks (ALGORITHM.md section 4).

- Error (anomaly) map: ``(image - recon)^2`` pixel-wise.
- Image score: the mean of the error map by default; alternatives by ``rule`` (see :func:`image_score`).
- Binary mask, decided for each image on its own (the published code took the maximum over the whole
  test batch, so a mask depended on its batch neighbours):

  * default rule: ``|image - recon| >= max(min_threshold, relative x max |image - recon|)`` with the
    published constants ``min_threshold=0.03``, ``relative=0.2``, the maximum taken over this image only
    (over the dilated lungs when the mask is restricted to them);
  * calibrated rule: ``|image - recon| >= threshold`` with a fixed threshold (e.g. the best pooled-Dice
    threshold found on validation data, stored in ``models/threshold.json``);
  * optional restriction to the lungs dilated by ``lung_dilation`` x the image size (a margin so that
    opacities on the lung border are kept). When no lung was found the restriction is skipped.
  * ``polarity="brighter"`` thresholds ``max(image - recon, 0)`` instead of ``|image - recon|``: only pixels
    where the image is brighter (denser) than its healthy reconstruction, as opacities are.

Both the score and the mask can work on a smoothed map (``smoothing``: a Gaussian of sigma = ``smoothing`` x the
mean image side, so it scales with the image size; 0 = none, the published behaviour): single-pixel errors on
normal edges then weigh less than a blob of the same peak.

Thresholds are in units of the absolute difference ``|image - recon|`` (images in [0, 1]).

Shapes: functions take one image as ``(H, W)`` or ``(1, H, W)``, or a batch ``(B, 1, H, W)`` (every item
treated on its own), as numpy arrays or torch tensors, and return the same type.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

__all__ = [
    "SCORE_RULES",
    "error_map",
    "dilate_lungs",
    "smooth_map",
    "image_score",
    "anomaly_mask",
    "mask_difference",
    "mask_region",
    "threshold_mask",
    "AnomalyMap",
    "AnomalyMapd",
    "AnomalyScore",
    "AnomalyScored",
    "AnomalyMask",
    "AnomalyMaskd",
    "ResizeToOriginald",
]

from bundle.evaluation.operating_point import (
    DEFAULT_LUNG_DILATION,
    DEFAULT_MIN_THRESHOLD,
    DEFAULT_RELATIVE_THRESHOLD,
    DEFAULT_SCORE_RULE,
    MASK_POLARITIES,
)
from bundle.keys import Keys

logger = logging.getLogger(__name__)

SCORE_RULES = ("mean", "max", "pNN (e.g. p99)", "lung_mean", "lung_max", "lung_pNN")
_RULE = re.compile(r"^(lung_)?(mean|max|p(\d+(?:\.\d+)?))$")


def _to_torch(x: Any) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.as_tensor() if hasattr(t, "as_tensor") else t  # MetaTensor -> plain tensor


def _as_batch(t: torch.Tensor) -> torch.Tensor:
    """(H, W) / (1, H, W) / (B, 1, H, W) -> (B, 1, H, W)."""
    if t.ndim == 2:
        return t[None, None]
    if t.ndim == 3:
        return t[None]
    if t.ndim == 4:
        return t
    raise ValueError(f"expected (H, W), (1, H, W) or (B, 1, H, W), got shape {tuple(t.shape)}.")


def error_map(image: Any, recon: Any) -> Any:
    """Squared reconstruction error ``(image - recon)^2``, same shape and type as ``image``.

    Args:
        image: input image(s) in [0, 1], any shape.
        recon: reconstruction, same shape.
    """
    if tuple(image.shape) != tuple(recon.shape):
        raise ValueError(f"image {tuple(image.shape)} and reconstruction {tuple(recon.shape)} differ in shape.")
    if isinstance(image, torch.Tensor):
        return (image - convert_to_dst_type(recon, image)[0]) ** 2
    return (np.asarray(image, dtype=np.float32) - np.asarray(recon, dtype=np.float32)) ** 2


def dilate_lungs(lung: Any, fraction: float = DEFAULT_LUNG_DILATION) -> torch.Tensor:
    """Binary lung region (any lung label > 0) dilated by a square of half-width ``fraction`` x image size.

    Args:
        lung: lung label map (H, W), (1, H, W) or (B, 1, H, W).
        fraction: dilation half-width as a fraction of the mean of H and W (0 = no dilation).

    Returns:
        bool tensor (B, 1, H, W).
    """
    region = (_as_batch(_to_torch(lung)) > 0).float()
    radius = int(round(fraction * (region.shape[-2] + region.shape[-1]) / 2))
    if radius > 0:
        region = F.max_pool2d(region, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return region > 0


def smooth_map(x: Any, smoothing: float = 0.0) -> torch.Tensor:
    """Gaussian smoothing of a map with sigma = ``smoothing`` x the mean of H and W (scales with the image size).

    Args:
        x: map (H, W), (1, H, W) or (B, 1, H, W).
        smoothing: sigma as a fraction of the image side; 0 returns the map unchanged (as a float tensor).

    Returns:
        float tensor of the input's shape.
    """
    t = _to_torch(x).float()
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}.")
    if smoothing == 0:
        return t

    batch = _as_batch(t)
    sigma = smoothing * (batch.shape[-2] + batch.shape[-1]) / 2
    return GaussianFilter(spatial_dims=2, sigma=sigma).to(batch.device)(batch).reshape(t.shape)


def image_score(error: Any, lung: Any | None = None, rule: str = DEFAULT_SCORE_RULE, smoothing: float = 0.0) -> float:
    """Image-level anomaly score of ONE error map.

    Args:
        error: error map (H, W) or (1, H, W).
        lung: optional lung label map of the same size (needed by the ``lung_`` rules).
        rule: ``"mean"`` (default, published: mean error over the whole image), ``"max"``, ``"pNN"``
            (the NN-th percentile, e.g. ``"p99"``, robust to a few hot pixels), or the same statistics over
            the lung pixels only: ``"lung_mean"``, ``"lung_max"``, ``"lung_pNN"``. A ``lung_`` rule falls
            back to the whole image when the lung map is missing or empty.
        smoothing: Gaussian smoothing of the error map before the statistic (sigma as a fraction of the image
            side, see :func:`smooth_map`); 0 = none.

    Returns:
        the score as a Python float.
    """
    match = _RULE.match(rule)
    if match is None:
        raise ValueError(f"unknown score rule {rule!r}; use one of {', '.join(SCORE_RULES)}.")
    e = smooth_map(error, smoothing)
    if e.ndim == 3 and e.shape[0] == 1:
        e = e[0]
    if e.ndim != 2:
        raise ValueError(f"image_score takes one error map (H, W) or (1, H, W), got shape {tuple(e.shape)}.")
    values = e.reshape(-1)
    if match.group(1) and lung is not None:
        region = _to_torch(lung).reshape(-1) > 0
        if region.numel() != values.numel():
            raise ValueError(f"lung map {tuple(lung.shape)} does not match the error map {tuple(e.shape)}.")
        if bool(region.any()):
            values = values[region]
    stat = match.group(2)
    if stat == "mean":
        return float(values.mean())
    if stat == "max":
        return float(values.max())
    q = float(match.group(3))
    if not 0 <= q <= 100:
        raise ValueError(f"percentile in score rule {rule!r} must lie in [0, 100].")
    return float(torch.quantile(values.double(), q / 100.0))


def anomaly_mask(
    image: Any,
    recon: Any,
    threshold: float | None = None,
    lung: Any | None = None,
    lung_dilation: float = DEFAULT_LUNG_DILATION,
    min_threshold: float = DEFAULT_MIN_THRESHOLD,
    relative: float = DEFAULT_RELATIVE_THRESHOLD,
    smoothing: float = 0.0,
    polarity: str = MASK_POLARITIES[0],
) -> Any:
    """Binary anomaly mask, decided for every image on its own.

    Args:
        image: input (H, W), (1, H, W) or a batch (B, 1, H, W), intensities in [0, 1].
        recon: reconstruction, same shape.
        threshold: fixed threshold on ``|image - recon|`` (calibrated); ``None`` = the per-image rule
            ``max(min_threshold, relative x max |image - recon|)``.
        lung: optional lung label map (same spatial shape, batch or single). When given, the mask is
            restricted to the lungs dilated by ``lung_dilation`` and the per-image maximum is taken there;
            an empty lung map (no lung found) means no restriction.
        lung_dilation: dilation half-width as a fraction of the image size.
        min_threshold: lower bound of the per-image threshold (published 0.03).
        relative: fraction of the per-image maximum difference (published 0.2).
        smoothing: Gaussian smoothing of ``|image - recon|`` before thresholding (sigma as a fraction of the
            image side, see :func:`smooth_map`); 0 = none (published).
        polarity: ``"absolute"`` thresholds ``|image - recon|`` (published); ``"brighter"`` thresholds
            ``max(image - recon, 0)``, so only pixels brighter than the reconstruction can be anomalous.

    Returns:
        uint8 mask with the shape and type (numpy/torch) of ``image``, values 0/1.
    """
    img = _to_torch(image).float()
    diff = mask_difference(img, recon, smoothing, polarity)
    region = mask_region(lung, diff, lung_dilation)
    mask = threshold_mask(diff, region, threshold, min_threshold, relative).to(torch.uint8).reshape(img.shape)
    return convert_to_dst_type(mask, image, dtype=torch.uint8 if isinstance(image, torch.Tensor) else np.uint8)[0]


def _checked_polarity(polarity: str) -> str:
    if polarity not in MASK_POLARITIES:
        raise ValueError(f"mask polarity must be one of {MASK_POLARITIES}, got {polarity!r}.")
    return polarity


def mask_difference(image: Any, recon: Any, smoothing: float = 0.0, polarity: str = MASK_POLARITIES[0]) -> torch.Tensor:
    """The difference that :func:`anomaly_mask` thresholds: ``|image - recon|`` (``absolute``) or
    ``max(image - recon, 0)`` (``brighter``), smoothed by :func:`smooth_map`.

    Args:
        image: input (H, W), (1, H, W) or (B, 1, H, W).
        recon: reconstruction, same shape.
        smoothing: Gaussian sigma as a fraction of the image side (0 = none).
        polarity: one of :data:`bundle.evaluation.operating_point.MASK_POLARITIES`.

    Returns:
        float tensor (B, 1, H, W).
    """
    img, rec = _to_torch(image).float(), _to_torch(recon).float()
    if img.shape != rec.shape:
        raise ValueError(f"image {tuple(img.shape)} and reconstruction {tuple(rec.shape)} differ in shape.")
    signed = _as_batch(img) - _as_batch(rec)
    return smooth_map(signed.abs() if _checked_polarity(polarity) == "absolute" else signed.clamp(min=0), smoothing)


def mask_region(lung: Any | None, diff: torch.Tensor, lung_dilation: float = DEFAULT_LUNG_DILATION) -> torch.Tensor:
    """Where :func:`anomaly_mask` may mark pixels: the lungs dilated by ``lung_dilation`` x the image size, the
    whole image for items without a lung or when ``lung`` is None.

    Args:
        lung: lung label map (batch or single) or None.
        diff: the (B, 1, H, W) difference map the region is for.
        lung_dilation: dilation half-width as a fraction of the image size.

    Returns:
        bool tensor (B, 1, H, W).
    """
    region = torch.ones_like(diff, dtype=torch.bool)
    if lung is None:
        return region
    lung_region = dilate_lungs(lung, lung_dilation).to(diff.device)
    if lung_region.shape[-2:] != diff.shape[-2:]:
        raise ValueError(f"lung map {tuple(lung.shape)} does not match the image {tuple(diff.shape[-2:])}.")
    lung_region = lung_region.expand_as(diff)
    found = lung_region.flatten(1).any(dim=1)  # items without lungs keep the whole image
    return torch.where(found[:, None, None, None], lung_region, region)


def threshold_mask(
    diff: torch.Tensor,
    region: torch.Tensor,
    threshold: float | None = None,
    min_threshold: float = DEFAULT_MIN_THRESHOLD,
    relative: float = DEFAULT_RELATIVE_THRESHOLD,
) -> torch.Tensor:
    """The mask of :func:`anomaly_mask` from its difference map and region (both (B, 1, H, W)): ``diff >= threshold``
    or, when ``threshold`` is None, ``diff >= max(min_threshold, relative x max of diff in the region)`` per item.

    Returns:
        bool tensor (B, 1, H, W), False outside the region.
    """
    if threshold is None:
        peak = torch.where(region, diff, torch.zeros_like(diff)).flatten(1).amax(dim=1)
        thr = torch.clamp(relative * peak, min=min_threshold)[:, None, None, None]
    else:
        thr = torch.as_tensor(float(threshold), dtype=diff.dtype, device=diff.device)
    return (diff >= thr) & region


class AnomalyMap(Transform):
    """Array form of :func:`error_map`: ``AnomalyMap()(image, recon) -> (image - recon)^2``."""

    def __call__(self, image: Any, recon: Any) -> Any:
        return error_map(image, recon)


class AnomalyMapd(MapTransform):
    """Writes the error map ``(image - recon)^2`` of each reconstruction in ``keys`` (items (1, H, W)).

    Args:
        keys: the reconstruction (the network output, ``pred`` as it leaves the inferer); one key.
        image_key: the network input.
        output_key: where the error map goes.
        allow_missing_keys: skip silently when the reconstruction is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.PRED,
        image_key: str = Keys.IMAGE,
        output_key: str = Keys.ERROR,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"AnomalyMapd writes one error map: give one reconstruction key, got {self.keys}.")
        self.image_key, self.output_key = image_key, output_key
        self.mapper = AnomalyMap()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.mapper(d[self.image_key], d[key])
        return d


class AnomalyScore(Transform):
    """Array form of :func:`image_score`; see there for ``rule``."""

    def __init__(self, rule: str = DEFAULT_SCORE_RULE, smoothing: float = 0.0) -> None:
        image_score(torch.zeros(2, 2), rule=rule)  # validate the rule now, not on the first image
        self.rule, self.smoothing = rule, float(smoothing)

    def __call__(self, error: Any, lung: Any | None = None) -> float:
        return image_score(error, lung=lung, rule=self.rule, smoothing=self.smoothing)


class AnomalyScored(MapTransform):
    """Writes the image score (a float) and the number of lungs found (0, 1 or 2) for one item.

    Args:
        keys: the error map (1, H, W); one key.
        lung_key: lung label map (1, H, W); may be absent (then ``lungs_found`` is None).
        rule: score rule, see :func:`image_score`.
        output_key: where the score goes.
        lungs_found_key: where the number of lungs found goes.
        smoothing: Gaussian smoothing of the error map before scoring (fraction of the image side; 0 = none).
        allow_missing_keys: skip silently when the error map is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.ERROR,
        lung_key: str | None = Keys.LUNG,
        rule: str = DEFAULT_SCORE_RULE,
        output_key: str = Keys.SCORE,
        lungs_found_key: str = "lungs_found",
        smoothing: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"AnomalyScored writes one score: give one error-map key, got {self.keys}.")
        self.scorer = AnomalyScore(rule, smoothing)
        self.lung_key, self.output_key, self.lungs_found_key = lung_key, output_key, lungs_found_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lung = d.get(self.lung_key) if self.lung_key else None
            d[self.output_key] = self.scorer(d[key], lung)
            if lung is None:
                d[self.lungs_found_key] = None
            else:
                labels = torch.unique(_to_torch(lung))
                d[self.lungs_found_key] = int(((labels == 1) | (labels == 2)).sum())
        return d


class AnomalyMask(Transform):
    """Array form of :func:`anomaly_mask`.

    Args:
        threshold: fixed threshold on |image - recon|, or None for the per-image rule.
        lung_dilation: dilation of the lung restriction as a fraction of the image size.
        min_threshold: lower bound of the per-image threshold.
        relative: fraction of the per-image maximum.
        smoothing: Gaussian smoothing of |image - recon| before thresholding (fraction of the image side).
        polarity: ``"absolute"`` (published) or ``"brighter"`` (see :func:`anomaly_mask`).
    """

    def __init__(
        self,
        threshold: float | None = None,
        lung_dilation: float = DEFAULT_LUNG_DILATION,
        min_threshold: float = DEFAULT_MIN_THRESHOLD,
        relative: float = DEFAULT_RELATIVE_THRESHOLD,
        smoothing: float = 0.0,
        polarity: str = MASK_POLARITIES[0],
    ) -> None:
        self.threshold, self.lung_dilation = threshold, lung_dilation
        self.min_threshold, self.relative, self.smoothing = min_threshold, relative, float(smoothing)
        self.polarity = _checked_polarity(polarity)  # a bad config value fails when the chain is built

    def __call__(self, image: Any, recon: Any, lung: Any | None = None) -> Any:
        return anomaly_mask(
            image,
            recon,
            self.threshold,
            lung,
            self.lung_dilation,
            self.min_threshold,
            self.relative,
            self.smoothing,
            self.polarity,
        )


class AnomalyMaskd(MapTransform):
    """Writes the binary anomaly mask (uint8 (1, H, W), 0/1) of one item, by default over ``pred``.

    Args:
        keys: the reconstruction (the network output); one key.
        image_key: network input.
        output_key: where the mask goes (``pred``: the final mask, as MONAI Label expects).
        threshold: fixed threshold on |image - recon| (calibrated), None for the per-image rule.
        lung_key: lung label map used to restrict the mask when ``restrict_to_lungs``.
        restrict_to_lungs: keep only pixels inside the dilated lungs (no restriction when none was found
            or the key is absent).
        lung_dilation: dilation as a fraction of the image size.
        min_threshold: lower bound of the per-image threshold.
        relative: fraction of the per-image maximum.
        smoothing: Gaussian smoothing of |image - recon| before thresholding (fraction of the image side).
        polarity: ``"absolute"`` (published) or ``"brighter"`` (see :func:`anomaly_mask`).
        allow_missing_keys: skip silently when the reconstruction is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.PRED,
        image_key: str = Keys.IMAGE,
        output_key: str = Keys.PRED,
        threshold: float | None = None,
        lung_key: str | None = Keys.LUNG,
        restrict_to_lungs: bool = False,
        lung_dilation: float = DEFAULT_LUNG_DILATION,
        min_threshold: float = DEFAULT_MIN_THRESHOLD,
        relative: float = DEFAULT_RELATIVE_THRESHOLD,
        smoothing: float = 0.0,
        polarity: str = MASK_POLARITIES[0],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"AnomalyMaskd writes one mask: give one reconstruction key, got {self.keys}.")
        self.image_key, self.output_key = image_key, output_key
        self.lung_key, self.restrict_to_lungs = lung_key, restrict_to_lungs
        self.masker = AnomalyMask(threshold, lung_dilation, min_threshold, relative, smoothing, polarity)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lung = d.get(self.lung_key) if (self.restrict_to_lungs and self.lung_key) else None
            d[self.output_key] = self.masker(d[self.image_key], d[key], lung)
        return d


class ResizeToOriginald(MapTransform):
    """Resize (1, H', W') items back to the input's original (H, W), read from the reference item's meta.

    Used for float outputs such as the error map, which look better interpolated (bilinear) than inverted
    with the resampling mode of the preprocessing; masks use ``Invertd`` with nearest interpolation.

    Args:
        keys: items to resize.
        ref_key: MetaTensor whose ``meta["original_shape"]`` (set by ``bundle.io.LoadCXR``) gives (H, W).
        mode: ``torch.nn.functional.interpolate`` mode (``"bilinear"``, ``"nearest-exact"``, ...).
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection, ref_key: str = Keys.IMAGE, mode: str = "bilinear", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key, self.mode = ref_key, mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        meta = getattr(d[self.ref_key], "meta", {}) or {}
        if "original_shape" not in meta:
            raise KeyError(f"ResizeToOriginald: {self.ref_key!r} has no 'original_shape' in its meta.")
        shape = tuple(int(v) for v in torch.as_tensor(meta["original_shape"]).reshape(-1)[:2])
        for key in self.key_iterator(d):
            x = _to_torch(d[key]).float()
            if tuple(x.shape[-2:]) != shape:
                kwargs = {"align_corners": False} if self.mode in ("bilinear", "bicubic") else {}
                x = F.interpolate(_as_batch(x), size=shape, mode=self.mode, **kwargs).reshape(*x.shape[:-2], *shape)
            d[key] = x
        return d
