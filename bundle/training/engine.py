"""Trainer pieces for ART-ASyn: batch preparation, pairing inputs with their healthy targets, one iteration.

A training batch holds, for each healthy image, the healthy copy and its 1 to 3 synthetic variants
(``RandTextureAnomalyd(..., include_healthy=True)`` returns them as a list that ``list_data_collate`` flattens),
every sample with the healthy image as ``target``. The feature-alignment term compares the bottleneck features
of each input with those of its healthy target: samples are grouped by identical ``target``; the group's
healthy copy (input equal to target) supplies the target features from the same forward pass. Groups without
a healthy copy (e.g. offline variants without their original) get their target appended to the same forward
pass, so there is always exactly one forward and one backward per iteration (which DDP requires).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from bundle.keys import Keys
from bundle.training.network import BottleneckHook

__all__ = ["prepare_artasyn_batch", "pair_with_targets", "ARTASynIteration"]

logger = logging.getLogger(__name__)


def prepare_artasyn_batch(
    batchdata: Mapping[str, Any],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    image_key: str = Keys.IMAGE,
    target_key: str = Keys.TARGET,
    mask_key: str = Keys.ANOMALY_MASK,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move one collated training batch to ``device``.

    Without a ``target`` (plain reconstruction, no synthesis) the input is its own target; without an
    ``anomaly_mask`` the mask is empty.

    Returns:
        ``(image, target, anomaly_mask)``, each (B, 1, H, W) float32 (plain tensors, no metadata).
    """
    if image_key not in batchdata:
        raise KeyError(f"training batch has no {image_key!r} key (keys: {sorted(batchdata)}).")

    def _to(x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.to(device=device, dtype=torch.float32, non_blocking=non_blocking)

    image = _to(batchdata[image_key])
    target = _to(batchdata[target_key]) if target_key in batchdata else image
    mask = _to(batchdata[mask_key]) if mask_key in batchdata else torch.zeros_like(image)
    if not (image.shape == target.shape == mask.shape):
        raise ValueError(
            f"image {tuple(image.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} differ in shape."
        )
    return image, target, mask


def pair_with_targets(image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Find, for each sample, where the features of its healthy target come from.

    Args:
        image: (B, C, H, W) network inputs.
        target: (B, C, H, W) healthy targets; samples of one healthy image share an identical target.

    Returns:
        ``(extra, source)``: ``extra`` (M, C, H, W) holds the targets that have no healthy copy among the
        inputs (to append to the forward pass); ``source`` (B,) long indexes, for each sample, the row of
        ``cat([image, extra])`` whose features are its target's features.
    """
    batch = image.shape[0]
    flat_t = target.flatten(1)
    _, group = torch.unique(flat_t, dim=0, return_inverse=True)
    is_healthy = (image.flatten(1) == flat_t).all(dim=1)
    source = torch.empty(batch, dtype=torch.long, device=image.device)
    extra_rows: list[int] = []
    for g in group.unique().tolist():
        members = (group == g).nonzero().flatten()
        healthy = members[is_healthy[members]]
        if healthy.numel() > 0:
            source[members] = healthy[0]
        else:
            source[members] = batch + len(extra_rows)
            extra_rows.append(int(members[0]))
    extra = target[extra_rows] if extra_rows else target[:0]
    return extra, source


class ARTASynIteration:
    """``iteration_update`` for :class:`monai.engines.SupervisedTrainer` training with :class:`ARTASynLoss`.

    Uses the trainer's ``network``, ``optimizer``, ``loss_function``, ``prepare_batch`` (expected:
    :func:`prepare_artasyn_batch`), ``inferer`` and AMP settings. The bottleneck hook is registered on the first
    call (on the module inside DDP when wrapped). Fires MONAI's ``IterationEvents`` like the default iteration.
    Mixed precision runs when the trainer has ``amp`` and the batch is on a CUDA device (autocast and the grad
    scaler do nothing elsewhere); the first iteration logs whether it is on.

    Returns (stored in ``engine.state.output``; the trainer must use ``decollate=False``):
        dict with ``image`` (input), ``target``, ``anomaly_mask``, ``pred`` (reconstruction, detached),
        ``loss`` (total, detached) and ``loss_terms`` (dict of detached scalars, one per loss term and ``loss``).
    """

    def __init__(self) -> None:
        self._hook: BottleneckHook | None = None
        self._amp_logged = False

    def __call__(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, target, mask = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        loss_fn = engine.loss_function
        with_features = bool(getattr(loss_fn, "needs_features", False))
        if with_features and self._hook is None:
            self._hook = BottleneckHook(engine.network)
        batch = image.shape[0]
        inputs, source = image, None
        if with_features:
            extra, source = pair_with_targets(image, target)
            if extra.shape[0]:
                inputs = torch.cat([image, extra], dim=0)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_amp = bool(engine.amp and engine.scaler is not None and image.is_cuda)
        if not self._amp_logged:
            self._amp_logged = True
            if engine.amp and not use_amp:
                logger.info("mixed precision: requested (amp true) but the batch is on %s: off.", image.device)
            else:
                logger.info("mixed precision: %s.", "on" if use_amp else "off")
        with torch.autocast("cuda", **engine.amp_kwargs) if use_amp else contextlib.nullcontext():
            out = engine.inferer(inputs, engine.network)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            feats = tgt_feats = None
            if with_features:
                all_feats = self._hook.pop()  # type: ignore[union-attr]
                feats, tgt_feats = all_feats[:batch], all_feats[source]
            recon = out[:batch]
            terms = loss_fn(recon, target, image, mask, feats, tgt_feats)
        loss = terms["loss"]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if use_amp:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return {
            Keys.IMAGE: image,
            Keys.TARGET: target,
            Keys.ANOMALY_MASK: mask,
            Keys.PRED: recon.detach().float(),
            "loss": loss.detach(),
            "loss_terms": {name: value.detach() for name, value in terms.items()},
        }
