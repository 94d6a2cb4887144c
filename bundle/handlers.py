"""Ignite handlers for the training workflow: EMA of weights, resumable checkpoints, TensorBoard image grids.

The trainer engine itself is part of a checkpoint (iteration and epoch counters). Config items cannot refer to
the trainer from inside its own handler list, so the checkpoint handlers here add the engine they are attached
to by themselves.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bundle.network import unwrap

__all__ = [
    "WeightEMA",
    "EMAUpdate",
    "latest_checkpoint",
    "ResumeFromCheckpoint",
    "TrainingCheckpointSaver",
    "TensorBoardImageGrid",
    "ProgressBarHandler",
    "loss_terms",
]

logger = logging.getLogger(__name__)

_CKPT_NUMBER = re.compile(r"=(\d+)\.pt$")


def loss_terms(output: Mapping[str, Any]) -> dict[str, float]:
    """``output_transform`` for StatsHandler / TensorBoardStatsHandler: every loss term as a float."""
    return {f"loss/{name}" if name != "loss" else "loss": float(v) for name, v in output["loss_terms"].items()}


class WeightEMA:
    """Exponential moving average of the network weights, as a handler that checkpoints like a module.

    ``ema = decay * ema + (1 - decay) * weights`` after every iteration (published decay 0.9999). When enabled,
    validation and the saved ``models/model.pt`` use the averaged weights (:attr:`network`); when disabled the
    handler does nothing and :attr:`network` is the trained network itself (unwrapped from DDP).

    Args:
        network: the trained network (optionally DDP-wrapped).
        decay: EMA decay per iteration.
        enabled: switch.
    """

    def __init__(self, network: nn.Module, decay: float = 0.9999, enabled: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.source = unwrap(network)
        self.enabled = bool(enabled)
        self.averaged = (
            AveragedModel(self.source, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            if self.enabled
            else None
        )

    @property
    def network(self) -> nn.Module:
        """The weights to validate and save: the EMA copy when enabled, else the trained network."""
        return self.averaged.module if self.averaged is not None else self.source

    def attach(self, engine: Engine) -> None:
        if self.averaged is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.averaged.update_parameters(self.source)  # type: ignore[union-attr]

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict() if self.averaged is not None else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if self.averaged is None:
            return
        if not state_dict:
            logger.warning("checkpoint holds no EMA weights (saved without EMA); EMA restarts from the weights.")
            return
        self.averaged.load_state_dict(state_dict)


class EMAUpdate:
    """Handler-list entry that attaches a :class:`WeightEMA` defined elsewhere in the config (``ema``)."""

    def __init__(self, ema: WeightEMA) -> None:
        self.ema = ema

    def attach(self, engine: Engine) -> None:
        self.ema.attach(engine)


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The newest training checkpoint in ``directory``: the highest iteration number (``...=<n>.pt``), or None."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("*.pt"):
        match = _CKPT_NUMBER.search(path.name)
        if match:
            found.append((int(match.group(1)), path.stat().st_mtime, str(path)))
    return max(found)[2] if found else None


class ResumeFromCheckpoint:
    """Restore network, optimizer, EMA and trainer counters from a checkpoint when the run starts.

    Args:
        load_dict: objects to restore by name (e.g. ``{"model": net, "optimizer": opt, "ema": ema}``); the trainer
            this handler is attached to is added as ``"trainer"``.
        ckpt_dir: folder of the training checkpoints (searched with :func:`latest_checkpoint`).
        resume: restore the latest checkpoint in ``ckpt_dir`` (a warning, and a fresh start, when there is none).
        ckpt_path: restore this file instead (an error when missing). Wins over ``resume``.
        map_location: ``torch.load`` map location (e.g. the training device).
    """

    def __init__(
        self,
        load_dict: Mapping[str, Any],
        ckpt_dir: str | os.PathLike,
        resume: bool = False,
        ckpt_path: str | os.PathLike | None = None,
        map_location: Any = None,
    ) -> None:
        self.load_dict = dict(load_dict)
        self.ckpt_dir = str(ckpt_dir)
        self.resume = bool(resume)
        self.ckpt_path = str(ckpt_path) if ckpt_path else None
        self.map_location = map_location
        if self.ckpt_path and not Path(self.ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint to resume from not found: {self.ckpt_path}")

    def attach(self, engine: Engine) -> None:
        path = self.ckpt_path
        if path is None and self.resume:
            path = latest_checkpoint(self.ckpt_dir)
            if path is None:
                logger.warning("resume requested but no checkpoint found in %s: training from scratch.", self.ckpt_dir)
        if path is None:
            return
        loader = CheckpointLoader(
            load_path=path, load_dict={**self.load_dict, "trainer": engine}, map_location=self.map_location
        )
        loader.attach(engine)
        engine.add_event_handler(Events.STARTED, self._report, path)

    @staticmethod
    def _report(engine: Engine, path: str) -> None:
        logger.info("resumed from %s at epoch %d, iteration %d.", path, engine.state.epoch, engine.state.iteration)


class TrainingCheckpointSaver:
    """Save network, optimizer, EMA and trainer counters every ``save_interval`` iterations and at the end.

    Files: ``<ckpt_dir>/checkpoint_iteration=<n>.pt`` (the ``n_saved`` newest kept) and
    ``<ckpt_dir>/checkpoint_final_iteration=<n>.pt``; :func:`latest_checkpoint` finds the newest for resuming.

    Args:
        ckpt_dir: output folder.
        save_dict: objects to save by name; the trainer is added as ``"trainer"``.
        save_interval: iterations between checkpoints (0: only the final one).
        n_saved: how many periodic checkpoints to keep.
    """

    def __init__(
        self, ckpt_dir: str | os.PathLike, save_dict: Mapping[str, Any], save_interval: int = 5000, n_saved: int = 2
    ) -> None:
        self.ckpt_dir = str(ckpt_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.n_saved = n_saved

    def attach(self, engine: Engine) -> None:
        os.makedirs(self.ckpt_dir, exist_ok=True)
        CheckpointSaver(
            save_dir=self.ckpt_dir,
            save_dict={**self.save_dict, "trainer": engine},
            save_final=True,
            save_interval=self.save_interval,
            epoch_level=False,
            n_saved=self.n_saved,
        ).attach(engine)


class TensorBoardImageGrid:
    """Write a grid of training samples to TensorBoard every ``interval`` iterations.

    Columns: healthy target, network input (synthetic anomaly), anomaly mask, reconstruction (clamped to
    [0, 1]), error map ``(input - recon)^2`` scaled by its maximum over the grid. Rows: up to ``max_rows``
    samples of the batch, anomalous ones first.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``; or ``log_dir`` to create one.
        log_dir: folder for a new writer when ``summary_writer`` is None.
        interval: iterations between grids.
        max_rows: samples per grid.
        tag: TensorBoard tag.
    """

    def __init__(
        self,
        summary_writer: Any | None = None,
        log_dir: str | os.PathLike | None = None,
        interval: int = 100,
        max_rows: int = 4,
        tag: str = "train/target_input_mask_recon_error",
    ) -> None:
        if summary_writer is None:
            if log_dir is None:
                raise ValueError("TensorBoardImageGrid needs a summary_writer or a log_dir.")
            from torch.utils.tensorboard import SummaryWriter

            summary_writer = SummaryWriter(log_dir=str(log_dir))
        self.writer = summary_writer
        self.interval = max(1, int(interval))
        self.max_rows = max_rows
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    @staticmethod
    def grid(output: Mapping[str, torch.Tensor], max_rows: int = 4) -> torch.Tensor:
        """Build the (1, rows * H, 5 * W) grid image from one iteration's output."""
        image, target = output["image"].detach().float().cpu(), output["target"].detach().float().cpu()
        mask, pred = output["anomaly_mask"].detach().float().cpu(), output["pred"].detach().float().cpu()
        order = torch.argsort(mask.flatten(1).sum(1), descending=True, stable=True)[:max_rows]
        recon = pred[order].clamp(0, 1)
        error = (image[order] - recon) ** 2
        error = error / error.max().clamp_min(1e-8)
        cols = [target[order], image[order].clamp(0, 1), mask[order], recon, error]
        rows = torch.cat(cols, dim=-1)  # (R, 1, H, 5W)
        return torch.cat(list(rows), dim=-2)  # (1, R*H, 5W)

    def __call__(self, engine: Engine) -> None:
        self.writer.add_image(self.tag, self.grid(engine.state.output, self.max_rows), engine.state.iteration)
        self.writer.flush()


class ProgressBarHandler:
    """ignite's tqdm ProgressBar showing the running loss terms (the configs can only pass constructor args).

    Args:
        output_transform: maps ``engine.state.output`` to the dict shown; default :func:`loss_terms`.
        persist: keep the bar after each epoch.
    """

    def __init__(self, output_transform: Callable | None = None, persist: bool = False) -> None:
        from ignite.handlers import ProgressBar

        self.bar = ProgressBar(persist=persist)
        self.output_transform = output_transform or loss_terms

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=self.output_transform)
