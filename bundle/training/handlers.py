"""Ignite handlers for the training workflow: EMA of weights, resumable checkpoints, the saved models, TensorBoard
image grids.

The trainer engine itself is part of a checkpoint (iteration and epoch counters). Config items cannot refer to
the trainer from inside its own handler list, so the checkpoint handlers here add the engine they are attached
to by themselves. Boolean arguments go through :func:`bundle.options.as_bool` (``"false"`` is false).

Saved models (:class:`ModelSaver`): ``models/model.pt`` holds the final weights by default (as published), or the
best-by-validation weights with ``select_best``; ``models/model_best.pt`` always holds the best-by-validation
weights. Both are plain state dicts of ``network_def``. The best-metric record lives in the training checkpoint,
so a resumed run replaces ``model_best.pt`` only with a better model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar
from monai.handlers import CheckpointSaver
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bundle.evaluation.operating_point import DEFAULT_LUNG_DILATION, describe_point_mask, save_operating_point
from bundle.io import atomic_write
from bundle.keys import Keys
from bundle.options import as_bool, is_null
from bundle.training.network import unwrap
from bundle.training.validation import select_operating_point

__all__ = [
    "WeightEMA",
    "EMAUpdate",
    "latest_checkpoint",
    "ResumeFromCheckpoint",
    "TrainingCheckpointSaver",
    "ModelSaver",
    "SaveFinalModel",
    "SaveBestModel",
    "SelectOperatingPoint",
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
        enabled: switch (a boolean option, read with :func:`bundle.options.as_bool`).
    """

    def __init__(self, network: nn.Module, decay: float = 0.9999, enabled: bool | str = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.source = unwrap(network)
        self.enabled = as_bool(enabled, "use_ema")
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
    """Restore network, optimizer, EMA, the best-model record and trainer counters when the run starts.

    Args:
        load_dict: objects to restore by name (e.g. ``{"model": net, "optimizer": opt, "ema": ema,
            "model_saver": saver}``); the trainer this handler is attached to is added as ``"trainer"``.
        ckpt_dir: folder of the training checkpoints (searched with :func:`latest_checkpoint`).
        resume: restore the latest checkpoint in ``ckpt_dir`` (a warning, and a fresh start, when there is none);
            a boolean option (``true``/``false``, ``yes``/``no``, ``1``/``0``).
        ckpt_path: restore this file instead (an error when missing; ``None``/``"null"``: not set). Wins over
            ``resume``.
        map_location: ``torch.load`` map location (e.g. the training device).
        optional: names in ``load_dict`` that a checkpoint may lack (written before they existed): a warning,
            and that object starts afresh. Any other missing name is an error.
    """

    def __init__(
        self,
        load_dict: Mapping[str, Any],
        ckpt_dir: str | os.PathLike,
        resume: bool | str = False,
        ckpt_path: str | os.PathLike | None = None,
        map_location: Any = None,
        optional: Sequence[str] = ("ema", "model_saver"),
    ) -> None:
        self.load_dict = dict(load_dict)
        self.ckpt_dir = str(ckpt_dir)
        self.resume = as_bool(resume, "resume")
        self.ckpt_path = None if is_null(ckpt_path) or not str(ckpt_path).strip() else str(ckpt_path)
        self.map_location = map_location
        self.optional = tuple(optional)
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
        engine.add_event_handler(Events.STARTED, self.load, path)

    def load(self, engine: Engine, path: str) -> None:
        """Load ``path`` into the objects and ``engine`` (keeps the engine's ``max_epochs``, as MONAI's loader)."""
        checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
        objects = {**self.load_dict, "trainer": engine}
        missing = [k for k in objects if k not in checkpoint]
        required = [k for k in missing if k not in self.optional]
        if required:
            raise KeyError(
                f"{path}: not a training checkpoint of this bundle: no {required} (holds {sorted(checkpoint)})."
            )
        for name in missing:
            logger.warning("%s holds no %r (saved by an older version): it starts afresh.", path, name)
        prior_max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load={k: v for k, v in objects.items() if k in checkpoint}, checkpoint=checkpoint)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"{path} is at epoch {engine.state.epoch}, beyond max_epochs {prior_max_epochs}: raise "
                "--train#trainer#max_epochs to train further."
            )
        engine.state.max_epochs = prior_max_epochs
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


class ModelSaver:
    """Write the deployable weights: ``model.pt`` (final or best) and ``model_best.pt`` (best validation).

    - ``<save_dir>/model_best.pt``: the weights of the best validation key metric so far (replaced when a
      validation is better, or equal with ``greater_or_equal``), with ``model_best.json`` (metric name, value,
      epoch, iteration, run id) beside it.
    - ``<save_dir>/model.pt``: by default the final weights, written when training completes (the published
      code used its last weights); with ``select_best`` the best weights, written together with
      ``model_best.pt`` and again at the end (the final weights when no validation ever ran, with a warning).

    Both files are plain state dicts of ``network`` (what TorchScript export and MONAI Label load). The record
    (best value, epoch, iteration, run id) is this object's ``state_dict``: put the saver in the training
    checkpoint's ``save_dict``/``load_dict`` and a resumed run replaces ``model_best.pt`` only with a better model.
    A validation that happened after the checkpoint a run resumes from is not lost either: on resume,
    ``model_best.json`` of the same run, when it records a better value, raises the record to it.

    Attach it to the trainer with :class:`SaveFinalModel` and to the validation evaluator with
    :class:`SaveBestModel` (config handler lists take only dicts with a ``_target_``).

    Args:
        network: the weights to save (e.g. ``WeightEMA.network``: the EMA copy or the trained network).
        save_dir: output folder (``models/``).
        select_best: ``model.pt`` = the best validation weights instead of the final ones (boolean option).
        greater_or_equal: a validation equal to the record replaces it (later weights win ties).
        filename, best_filename: the two file names.
    """

    def __init__(
        self,
        network: nn.Module,
        save_dir: str | os.PathLike,
        select_best: bool | str = False,
        greater_or_equal: bool | str = True,
        filename: str = "model.pt",
        best_filename: str = "model_best.pt",
    ) -> None:
        self.network = unwrap(network)
        self.save_dir = Path(save_dir)
        self.select_best = as_bool(select_best, "select_best_model")
        self.greater_or_equal = as_bool(greater_or_equal, "greater_or_equal")
        self.model_path = self.save_dir / filename
        self.best_path = self.save_dir / best_filename
        self.record_path = self.best_path.with_suffix(".json")
        self.run_id = uuid.uuid4().hex
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.best_iteration: int | None = None
        self.key_metric: str | None = None
        self.trainer: Engine | None = None

    # ------------------------------------------------------------------ record (part of the training checkpoint)
    def state_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "key_metric": self.key_metric,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_iteration": self.best_iteration,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.run_id = str(state_dict.get("run_id") or self.run_id)
        self.key_metric = state_dict.get("key_metric")
        self.best_metric = state_dict.get("best_metric")
        self.best_epoch = state_dict.get("best_epoch")
        self.best_iteration = state_dict.get("best_iteration")
        self._adopt_newer_record()
        if self.best_metric is None:
            logger.info("resumed: no best %s recorded yet.", self.key_metric or "validation metric")
        else:
            logger.info(
                "resumed: best %s %.6g (epoch %s, iteration %s); %s is replaced only by a better model.",
                self.key_metric,
                self.best_metric,
                self.best_epoch,
                self.best_iteration,
                self.best_path.name,
            )

    def _adopt_newer_record(self) -> None:
        """Take ``model_best.json``'s value when it is this run's and better (a validation after the checkpoint)."""
        if not (self.record_path.is_file() and self.best_path.is_file()):
            return
        try:
            record = json.loads(self.record_path.read_text())
            value = float(record["value"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("%s unreadable (%s): ignored.", self.record_path, err)
            return
        if record.get("run_id") != self.run_id or not self._better(value, strict=True):
            return
        logger.info(
            "%s records a better %s (%.6g) than the checkpoint: kept as the record.",
            self.record_path,
            record.get("key_metric"),
            value,
        )
        self.key_metric = record.get("key_metric", self.key_metric)
        self.best_metric, self.best_epoch, self.best_iteration = value, record.get("epoch"), record.get("iteration")

    def _better(self, value: float, strict: bool = False) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_metric is None:
            return True
        return value > self.best_metric or (not strict and self.greater_or_equal and value == self.best_metric)

    # ------------------------------------------------------------------ events
    def save_final(self, engine: Engine) -> None:
        """Trainer COMPLETED: ``model.pt`` = final weights (default) or the best ones (``select_best``)."""
        if not self.select_best:
            self._write(self.model_path)
            logger.info("final weights (iteration %d) saved as %s.", engine.state.iteration, self.model_path)
        elif self.best_path.is_file() and self.best_metric is not None:
            with atomic_write(self.model_path) as tmp:
                tmp.write_bytes(self.best_path.read_bytes())
            logger.info(
                "%s = best validation weights (%s %.6g, iteration %s).",
                self.model_path,
                self.key_metric,
                self.best_metric,
                self.best_iteration,
            )
        else:
            self._write(self.model_path)
            logger.warning(
                "select_best_model: no validation result to select from; %s holds the final weights.", self.model_path
            )

    def save_best(self, evaluator: Engine) -> None:
        """Validation EPOCH_COMPLETED: replace ``model_best.pt`` (and ``model.pt`` with ``select_best``) if better."""
        name = getattr(evaluator.state, "key_metric_name", None)
        value = evaluator.state.metrics.get(name) if name else None
        try:
            value = float(value)
        except (TypeError, ValueError):
            logger.warning(
                "validation gave no usable key metric (%s = %r): %s not updated.", name, value, self.best_path.name
            )
            return
        # the trainer's counters (MONAI's ValidationHandler also gives the evaluator the trainer's epoch)
        iteration = self.trainer.state.iteration if self.trainer is not None else None
        epoch = self.trainer.state.epoch if self.trainer is not None else evaluator.state.epoch
        if not self._better(value):
            logger.info(
                "%s %.6g does not beat the best %.6g (iteration %s): %s kept.",
                name,
                value,
                self.best_metric,
                self.best_iteration,
                self.best_path.name,
            )
            return
        self.key_metric, self.best_metric = name, value
        self.best_epoch, self.best_iteration = int(epoch), iteration
        self._write(self.best_path)
        record = {
            "key_metric": name,
            "value": value,
            "epoch": self.best_epoch,
            "iteration": iteration,
            "run_id": self.run_id,
        }
        with atomic_write(self.record_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2))
        if self.select_best:
            self._write(self.model_path)
        logger.info(
            "best %s %.6g at iteration %s: saved %s%s.",
            name,
            value,
            iteration,
            self.best_path.name,
            f" and {self.model_path.name}" if self.select_best else "",
        )

    def _write(self, path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        with atomic_write(path) as tmp:
            torch.save(state, tmp)


class SaveFinalModel:
    """Trainer handler-list entry: attaches :meth:`ModelSaver.save_final` (at COMPLETED) to the trainer."""

    def __init__(self, saver: ModelSaver) -> None:
        self.saver = saver

    def attach(self, engine: Engine) -> None:
        self.saver.trainer = engine
        engine.add_event_handler(Events.COMPLETED, self.saver.save_final)


class SaveBestModel:
    """Validation handler-list entry: attaches :meth:`ModelSaver.save_best` (every validation) to the evaluator."""

    def __init__(self, saver: ModelSaver) -> None:
        self.saver = saver

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.saver.save_best)


class SelectOperatingPoint:
    """Trainer handler: when training completes, choose the evaluation's score rule and mask rule on validation data.

    Runs :func:`bundle.training.validation.select_operating_point` with the weights of ``model_path`` (the deployable
    ``models/model.pt``, final or best) on the validation monitor's data (synthetic anomalies on held-in healthy
    training images, or ``val/``; never the test set) and writes the choice, with every candidate's figure, to
    ``save_path`` (``models/threshold.json``), which ``configs/evaluate.json`` reads. Attach it after
    :class:`SaveFinalModel` so that ``model.pt`` exists.

    Args:
        network: a network of the trained architecture (its weights are not changed: a copy loads ``model_path``).
        dataloader: the validation DataLoader (items with ``image``, ``label``, ``mask``, ``has_mask``, ``lung``).
        model_path: the weights to select for.
        save_path: output JSON file.
        mode: ``"published"`` (nothing selected: the published whole-image mean score and mask rule stay) or
            ``"validation"`` (select).
        device: where the network runs.
        lung_dilation: dilation of the lung restriction of the mask, fraction of the image size.
    """

    MODES = ("published", "validation")

    def __init__(
        self,
        network: nn.Module,
        dataloader: Any,
        model_path: str | os.PathLike,
        save_path: str | os.PathLike,
        mode: str = "published",
        device: str | torch.device = "cpu",
        lung_dilation: float | None = None,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"--rule_selection: expected one of {', '.join(self.MODES)}, got {mode!r}.")
        self.network, self.dataloader, self.mode = unwrap(network), dataloader, mode
        self.model_path, self.save_path = Path(model_path), Path(save_path)
        self.device = device
        self.lung_dilation = DEFAULT_LUNG_DILATION if lung_dilation is None else float(lung_dilation)

    def attach(self, engine: Engine) -> None:
        if self.mode == "validation":
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> dict[str, Any]:
        net = copy.deepcopy(self.network)
        net.load_state_dict(torch.load(self.model_path, map_location=self.device, weights_only=True))
        point = select_operating_point(net, self.dataloader, self.device, lung_dilation=self.lung_dilation)
        point = {"weights": self.model_path.name, **point}
        save_operating_point(self.save_path, point)
        score = f"{point['score_rule']}, smoothing={point['score_smoothing']:g}"
        logger.info(
            f"operating point selected on the validation monitor ({point['num_healthy']} healthy, "
            f"{point['num_diseased']} diseased): score {score} (image AUROC {point['score_auroc'][score]:.3f}; "
            f"published mean {point['score_auroc'].get('mean, smoothing=0', float('nan')):.3f}), mask "
            f"{describe_point_mask(point, self.lung_dilation)}; written to {self.save_path}"
        )
        return point


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
        image, target, mask, pred = (
            output[k].detach().float().cpu() for k in (Keys.IMAGE, Keys.TARGET, Keys.ANOMALY_MASK, Keys.PRED)
        )
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
        self.bar = ProgressBar(persist=persist)
        self.output_transform = output_transform or loss_terms

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=self.output_transform)
