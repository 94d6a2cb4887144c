"""ART-ASyn synthesis as MONAI transforms: :class:`RandTextureAnomaly` on an image and its lung map,
:class:`RandTextureAnomalyd` on a dictionary (a healthy copy and several anomalous variants per image)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import convert_data_type, convert_to_dst_type

from bundle.keys import Keys
from bundle.synthesis.texture import (
    Brush,
    TextureAnomalyParams,
    default_brush,
    draw,
    no_anomaly,
    prepare,
)

__all__ = ["RandTextureAnomaly", "RandTextureAnomalyd"]


class RandTextureAnomaly(RandomizableTransform):
    """Randomly paint an ART-ASyn texture anomaly (lung-opacity-like) into the lungs.

    With probability ``prob`` an anomaly is drawn (see :func:`synthesize_texture_anomaly`); otherwise,
    or when the lung map is empty, the image comes back unchanged with an empty mask. All draws come
    from ``self.R``, so ``set_random_state`` makes it reproducible.

    Args:
        prob: probability of drawing an anomaly.
        brush: None for the procedural brush, a texture file path, or a (h, w) texture array.
        brush_seed: seed of the procedural brush texture.
        max_attempts: redraws when an anomaly's mask comes out empty.
        params: any field of :class:`TextureAnomalyParams` (published defaults).

    Call with ``img`` (1, H, W) in [0, 1] (numpy, torch or MetaTensor) and ``lung`` (1, H, W) or (H, W)
    label map; returns ``(anomalous, mask)`` of the image's type, both (1, H, W) float32, mask 0/1.
    """

    def __init__(
        self,
        prob: float = 1.0,
        brush: str | np.ndarray | None = None,
        brush_seed: int = 0,
        max_attempts: int = 4,
        **params: Any,
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        RandomizableTransform.__init__(self, prob)
        known = {f.name for f in fields(TextureAnomalyParams)}
        unknown = set(params) - known
        if unknown:
            raise TypeError(f"unknown RandTextureAnomaly parameters {sorted(unknown)}; known: {sorted(known)}")
        self.params = TextureAnomalyParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        self.brush = default_brush(brush_seed) if brush is None else Brush(brush, brush_seed)
        self.max_attempts = max_attempts

    def __call__(self, img: Any, lung: Any, randomize: bool = True) -> tuple[Any, Any]:
        """Returns ``(anomalous, mask)``; :meth:`variants` also gives each draw's record."""
        (out, mask, _), *_ = self.variants(img, lung, 1, randomize)
        return out, mask

    def variants(self, img: Any, lung: Any, count: int, randomize: bool = True) -> list[tuple[Any, Any, dict]]:
        """``count`` independent draws ``(anomalous, mask, info)`` for one image (shared set-up computed once)."""
        image, *_ = convert_data_type(img, np.ndarray, dtype=np.float32)
        lung_np, *_ = convert_data_type(lung, np.ndarray)
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"RandTextureAnomaly expects a (1, H, W) image, got shape {tuple(image.shape)}")
        lung_np = lung_np.reshape(lung_np.shape[-2:]) if lung_np.ndim == 3 and lung_np.shape[0] == 1 else lung_np
        if lung_np.shape != image.shape[1:]:
            raise ValueError(f"lung map shape {tuple(lung_np.shape)} does not match image shape {tuple(image.shape)}")
        dtype = torch.float32 if isinstance(img, torch.Tensor) else np.float32
        prep, results = None, []
        for _ in range(count):
            if randomize:
                self.randomize(None)
            if self._do_transform:
                prep = prep or prepare(image[0], lung_np, self.params)
                out, mask, info = draw(prep, self.R, self.params, self.brush, self.max_attempts)
            else:
                out, mask, info = image[0], np.zeros(image.shape[1:], np.uint8), no_anomaly("not drawn (prob)")
            out_t = convert_to_dst_type(out[None], img, dtype=dtype)[0]
            mask_t = convert_to_dst_type(mask[None].astype(np.float32), img, dtype=dtype)[0]
            results.append((out_t, mask_t, info))
        return results


class RandTextureAnomalyd(Randomizable, MapTransform):
    """Dictionary form of :class:`RandTextureAnomaly`, optionally making several variants per image.

    Reads ``keys`` (the image, (1, H, W) in [0, 1]) and ``lung_key`` (label map); writes the anomalous
    image to the image key, the healthy image to ``target_key``, the 0/1 mask to ``mask_key`` and a
    plain dict to ``meta_key``: ``anomaly`` (bool), ``area`` (mask fraction of the image),
    ``lung_fraction`` (mask area / lung area), ``strokes`` (int). All values are plain Python
    numbers, so default collation works.

    Args:
        keys: the image key (exactly one).
        lung_key: key of the (1, H, W) lung label map (kept in the output).
        target_key: where the healthy image goes.
        mask_key: where the anomaly mask goes ((1, H, W) float32 0/1, the image's array type).
        meta_key: where the per-sample synthesis record goes (None: not written).
        prob: probability that a variant gets an anomaly (otherwise it is a healthy copy).
        num_variants: anomalous variants per input, an int or an inclusive (low, high) range drawn
            per input from ``self.R``.
        include_healthy: also return the unchanged image (empty mask) as the first sample.
        allow_missing_keys: skip silently when the image key is missing.
        kwargs: :class:`RandTextureAnomaly` arguments (``brush``, ``brush_seed``, ``max_attempts`` and
            any :class:`TextureAnomalyParams` field).

    Returns:
        One dict when ``num_variants == 1`` and not ``include_healthy``; otherwise a list of dicts
        (healthy copy first), which ``monai.data.list_data_collate`` flattens into the batch.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.IMAGE,
        lung_key: str = Keys.LUNG,
        target_key: str = Keys.TARGET,
        mask_key: str = Keys.ANOMALY_MASK,
        meta_key: str | None = "anomaly_meta",
        prob: float = 1.0,
        num_variants: int | Sequence[int] = 1,
        include_healthy: bool = False,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandTextureAnomalyd paints one image key, got {self.keys}")
        if isinstance(num_variants, (int, np.integer)):
            low = high = int(num_variants)
        else:
            low, high = (int(v) for v in num_variants)
        if low < 0 or high < low or (high == 0 and not include_healthy):
            raise ValueError(
                f"num_variants must be an int >= 0 or a (low, high) range, with at least one sample; got {num_variants}"
            )
        self.lung_key, self.target_key, self.mask_key, self.meta_key = lung_key, target_key, mask_key, meta_key
        self.num_variants = (low, high)
        self.include_healthy = include_healthy
        self.synth = RandTextureAnomaly(prob=prob, **kwargs)
        self._count = low

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> "RandTextureAnomalyd":
        super().set_random_state(seed, state)
        self.synth.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        low, high = self.num_variants
        self._count = low if low == high else int(self.R.randint(low, high + 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict | list[dict]:
        self.randomize()
        key = self.keys[0]
        single = self.num_variants == (1, 1) and not self.include_healthy
        if key not in data:
            if self.allow_missing_keys:
                return dict(data) if single else [dict(data)]
            raise KeyError(f"RandTextureAnomalyd: key {key!r} not in the data (keys: {list(data)})")
        if self.lung_key not in data:
            raise KeyError(f"RandTextureAnomalyd: lung map key {self.lung_key!r} not in the data (keys: {list(data)})")
        image, lung = data[key], data[self.lung_key]
        samples = []
        if self.include_healthy:
            samples.append(self._sample(data, key, _copy(image), _zeros_like(image), no_anomaly("healthy copy")))
        for out, mask, info in self.synth.variants(image, lung, self._count):
            samples.append(self._sample(data, key, out, mask, info))
        return samples[0] if single else samples

    def _sample(self, data: Mapping, key: Hashable, image: Any, mask: Any, info: dict) -> dict:
        d = dict(data)
        d[self.target_key] = _copy(data[key])
        d[key] = image
        d[self.mask_key] = mask
        if self.meta_key is not None:
            d[self.meta_key] = {k: info[k] for k in ("anomaly", "area", "lung_fraction", "strokes")}
        return d


def _copy(x: Any) -> Any:
    """A private copy (MetaTensor meta included), so later in-place transforms touch one key only."""
    return x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)


def _zeros_like(img: Any) -> Any:
    zeros = np.zeros(tuple(img.shape), np.float32)
    return convert_to_dst_type(zeros, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]
