"""Evaluation on a labelled test set for ``configs/evaluate.json``: metrics, tables, curves, montage, calibration.

Protocol (ALGORITHM.md section 4, without the published bugs):

- Every entry of the chosen split is scored exactly once (a stream over the list; unreadable files are
  listed as failures, never replaced or repeated).
- Ground-truth masks come from the datalist (``ground_truth/`` or ``ground_truth/diseased/`` of the folder
  layout, or the CSV/JSON ``mask`` column). Diseased images without a mask are listed in ``missing_masks``
  and left out of the pixel metrics; there is never an all-ones stand-in.
- All metrics are computed at the model resolution (images, error maps and masks resized to
  ``image_size``; masks with nearest neighbour), as in the paper.
- Image level: AUROC and AP of the image score (healthy 0, diseased 1), and the best-F1 operating point.
- Pixel level: Dice of the binary mask, as the mean over diseased images with masks (``pixel_dice``) and
  pooled over their pixels (``pixel_dice_pooled``); pixel AUROC over the images with known pixel labels
  (diseased with masks, and healthy images, whose pixels are all normal), streamed in a histogram; the
  best pooled Dice over fixed thresholds on |image - recon| (``pixel_best_dice``/``pixel_best_threshold``).
- Zero-shot mode (the QaTa-COV19 layout: only diseased test images, with masks): image metrics are
  undefined and reported as null; the report says so. With only healthy images the same holds.

Optional calibration (``calibrate=True``, run on the validation split): the best-F1 image threshold and
the best pooled-Dice pixel threshold are written to ``models/threshold.json``, which inference and later
evaluations then use (``score_threshold`` for labels, ``mask_threshold`` for masks).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from tqdm import tqdm

from bundle.data.datalist import build_datalist
from bundle.data.failures import FailureLog, meta_of
from bundle.evaluation.metrics import DiceAccumulator, ImageScores, PixelAUROC, nan_to_none
from bundle.evaluation.operating_point import calibrated_operating_point, save_operating_point
from bundle.evaluation.report import csv_text, markdown_report, plot_roc_pr, save_montage
from bundle.io import as_2d, write_text_atomic

__all__ = ["evaluation_datalist", "AnomalyEvaluationReport"]

logger = logging.getLogger(__name__)


def evaluation_datalist(source: str | os.PathLike, split: str = "test") -> list[dict]:
    """The entries ``{"image", "label", "mask"?}`` of one split of a dataset folder, CSV or datalist JSON.

    Args:
        source: dataset folder in the published layout (``train/`` may be absent, e.g. QaTa-COV19), or a
            CSV / decathlon-style JSON datalist.
        split: ``"test"`` or ``"validation"``.

    Raises:
        ValueError: the split is empty, an entry has no 0/1 label, or an image is listed twice.
    """
    kwargs = {"require_train": False} if os.path.isdir(source) else {}
    entries = list(build_datalist(source, **kwargs).get(split) or [])
    if not entries:
        raise ValueError(
            f"{source}: the {split!r} split is empty (expected e.g. {split}/healthy and {split}/diseased)."
        )
    seen: set[str] = set()
    for e in entries:
        if e.get("label") not in (0, 1):
            raise ValueError(
                f"{e['image']}: evaluation needs a 0 (healthy) / 1 (diseased) label, got {e.get('label')!r}."
            )
        if e["image"] in seen:
            raise ValueError(f"{e['image']} is listed twice in the {split!r} split; every image is scored once.")
        seen.add(e["image"])
    return entries


class _Keeper:
    """The k items with the highest keys (a bounded heap), for the best/worst montage."""

    def __init__(self, k: int) -> None:
        self.k, self.heap, self.counter = k, [], itertools.count()

    def push(self, key: float, make_item: Any) -> None:
        entry = (key, next(self.counter))
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, (*entry, make_item()))
        elif entry > self.heap[0][:2]:
            heapq.heapreplace(self.heap, (*entry, make_item()))

    def items(self) -> list[Any]:
        return [item for *_, item in sorted(self.heap, reverse=True)]


class AnomalyEvaluationReport:
    """Ignite handler that scores every test item once and writes the evaluation outputs at the end.

    Reads per item (after post-processing): from the batch ``label`` (0/1), ``mask`` (ground truth at the
    model size), ``has_mask``; from the output ``image``, ``pred`` (binary mask), ``error``, ``score``,
    ``lungs_found``.

    Writes into ``output_dir``: ``metrics.json``, ``per_image.csv``, ``report.md``, ``roc.png`` and
    ``pr.png`` (when both classes are present), ``montage.png`` (best and worst cases), and
    ``failures.json`` (files that could not be read). With ``calibration_path`` also the operating point.

    Args:
        output_dir: output folder.
        data: the evaluated entries (to check that each was scored once and list missing masks).
        failures: the :class:`~bundle.inference.FailureLog` the dataset records into.
        score_rule: score rule name (recorded).
        score_smoothing: Gaussian smoothing of the error map before scoring (recorded; fraction of the size).
        mask_rule: mask rule description (recorded).
        split: split name (recorded).
        calibration_path: write the calibrated operating point here (None: no calibration).
        operating_point: the operating point read from ``models/threshold.json`` (selected on the validation
            monitor after training, or calibrated), recorded in ``metrics.json`` (None: none was read).
        num_bins: histogram bins for pixel AUROC / best pixel threshold.
        montage_cases: number of best and of worst cases in the montage.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        data: list[dict],
        failures: FailureLog,
        score_rule: str = "mean",
        score_smoothing: float = 0.0,
        mask_rule: str = "",
        split: str = "test",
        calibration_path: str | os.PathLike | None = None,
        operating_point: dict[str, Any] | None = None,
        num_bins: int = 65536,
        montage_cases: int = 3,
        progress: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.data, self.failures = data, failures
        self.score_rule, self.mask_rule, self.split = score_rule, mask_rule, split
        self.score_smoothing = float(score_smoothing)
        self.calibration_path = calibration_path
        self.operating_point = operating_point
        self.num_bins, self.montage_cases, self.progress = num_bins, montage_cases, progress
        self.metrics: dict[str, Any] = {}

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Any = None) -> None:
        self.rows: list[dict] = []
        self.images = ImageScores()
        self.dice = DiceAccumulator()
        self.pixel = PixelAUROC(num_bins=self.num_bins)
        self.best, self.worst = _Keeper(self.montage_cases), _Keeper(self.montage_cases)
        self.false_alarms, self.misses = _Keeper(self.montage_cases), _Keeper(self.montage_cases)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._bar = None
        if self.progress:
            self._bar = tqdm(total=len(self.data), desc=f"evaluate ({self.split})", unit="img", dynamic_ncols=True)

    def iteration_completed(self, engine: Any) -> None:
        batch, output = engine.state.batch, engine.state.output
        if not isinstance(output, list):
            raise TypeError("AnomalyEvaluationReport needs a decollating evaluator (decollate=True).")
        for b, o in zip(batch, output, strict=True):
            self._add({**b, **o})
            if self._bar is not None:
                self._bar.update(1)

    def _add(self, item: dict) -> None:
        image = as_2d(item["image"]).astype(np.float32)
        pred = (as_2d(item["pred"]) > 0).astype(np.uint8)
        error = as_2d(item["error"]).astype(np.float32)
        label = int(torch.as_tensor(item["label"]).reshape(-1)[0])
        has_mask = bool(int(torch.as_tensor(item.get("has_mask", 0)).reshape(-1)[0]))
        gt = (as_2d(item["mask"]) > 0).astype(np.uint8) if "mask" in item else None
        file = str(meta_of(item["image"]).get("filename_or_obj", item.get("image_path", "")))
        score = float(item["score"])
        row = {
            "file": file,
            "label": label,
            "score": score,
            "has_mask": int(has_mask),
            "dice": None,
            "pred_fraction": float(pred.mean()),
            "gt_fraction": float(gt.mean()) if has_mask else None,
            "lungs_found": item.get("lungs_found"),
        }
        if has_mask and label == 1:
            row["dice"] = self.dice.update(pred, gt)
        if (has_mask and label == 1) or label == 0:  # pixels with known labels (healthy: all normal)
            self.pixel.update(error, gt if has_mask else np.zeros_like(pred))
        self.images.update(score, label)
        self.rows.append(row)

        def case(caption: str) -> Any:
            return lambda: {
                "image": image.astype(np.float16),
                "error": error.astype(np.float16),
                "pred": pred,
                "mask": gt if has_mask else None,
                "caption": caption,
            }

        name = os.path.basename(file)
        if row["dice"] is not None:
            self.best.push(row["dice"], case(f"{name}: Dice {row['dice']:.3f}, score {score:.4g}"))
            self.worst.push(-row["dice"], case(f"{name}: Dice {row['dice']:.3f}, score {score:.4g}"))
        elif label == 0:
            self.false_alarms.push(score, case(f"{name}: healthy, score {score:.4g}"))
        else:
            self.misses.push(-score, case(f"{name}: diseased, score {score:.4g}"))

    def _pixel_best(self) -> tuple[float | None, float | None]:
        """Best pooled Dice over thresholds on |image - recon| (bin edges of the pixel histogram)."""
        pos, neg = self.pixel.pos[::-1].astype(np.float64), self.pixel.neg[::-1].astype(np.float64)
        n_pos = pos.sum()
        if n_pos == 0:
            return None, None
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        dice = 2 * tp / (2 * tp + fp + (n_pos - tp))
        k = int(np.argmax(dice))
        lower_edge = (self.num_bins - 1 - k) / self.num_bins  # bin index counted from the top
        return float(dice[k]), float(lower_edge * np.sqrt(self.pixel.max_value))

    def compute(self) -> dict[str, Any]:
        labels = self.images.labels
        n_healthy, n_diseased = labels.count(0), labels.count(1)
        both = self.images.both_classes
        failures = self.failures.read()
        processed = {r["file"] for r in self.rows}
        missing_masks = sorted(
            e["image"] for e in self.data if e.get("label") == 1 and not e.get("mask") and e["image"] in processed
        )
        best_dice, best_threshold = self._pixel_best()
        mode = "standard" if both else ("zero-shot" if n_diseased else "healthy-only")
        metrics = {
            "mode": mode,
            "split": self.split,
            "image_auroc": self.images.auroc(),
            "image_ap": self.images.ap(),
            "pixel_dice": nan_to_none(self.dice.mean),
            "pixel_dice_pooled": nan_to_none(self.dice.pooled),
            "pixel_auroc": nan_to_none(self.pixel.compute()),
            "pixel_best_dice": best_dice,
            "pixel_best_threshold": best_threshold,
            "best_f1": self.images.best_f1(),
            "num_images": len(self.rows),
            "num_healthy": n_healthy,
            "num_diseased": n_diseased,
            "num_with_masks": len(self.dice.values),
            "num_listed": len(self.data),
            "num_failed": len(failures),
            "score_rule": self.score_rule,
            "score_smoothing": self.score_smoothing,
            "mask_rule": self.mask_rule,
            "operating_point": self.operating_point,
            "missing_masks": missing_masks,
            "failed": failures,
        }
        if len(self.rows) + len(failures) != len(self.data) or len(processed) != len(self.rows):
            raise RuntimeError(
                f"{len(self.data)} images listed but {len(self.rows)} scored ({len(processed)} distinct) and "
                f"{len(failures)} failed: every image must be scored exactly once."
            )
        return metrics

    def completed(self, engine: Any = None) -> None:
        if self._bar is not None:
            self._bar.close()
        self.metrics = metrics = self.compute()
        rows = sorted(self.rows, key=lambda r: r["file"])
        out = self.output_dir
        columns = ("file", "label", "score", "has_mask", "dice", "pred_fraction", "gt_fraction", "lungs_found")
        write_text_atomic(out / "per_image.csv", csv_text(rows, columns))
        files: dict[str, str | None] = {"per_image": "per_image.csv", "roc": None, "pr": None, "montage": None}
        if metrics["mode"] == "standard" and plot_roc_pr(
            [r["score"] for r in rows], [r["label"] for r in rows], out / "roc.png", out / "pr.png"
        ):
            files.update(roc="roc.png", pr="pr.png")
        if self.dice.values:
            first, second, title = self.best.items(), self.worst.items(), "best (top) and worst (bottom) Dice"
        else:
            first, second = self.misses.items(), self.false_alarms.items()
            title = "lowest-scored diseased (top), highest-scored healthy (bottom)"
        shown = {c["caption"] for c in first}  # small test sets: a case is never shown twice
        cases = first + [c for c in reversed(second) if c["caption"] not in shown]
        if save_montage(out / "montage.png", cases, title=title):
            files["montage"] = "montage.png"
        notes = []
        point = self.operating_point
        if point:
            where = point.get("selected_on") or f"the {point.get('calibrated_on')} split (calibration)"
            notes.append(f"operating point from {point.get('file')}, chosen on {where}, never on this test set.")
        if metrics["mode"] == "zero-shot":
            notes.append("zero-shot: no healthy test images, image_auroc and image_ap are null (undefined).")
        if metrics["missing_masks"]:
            notes.append(
                f"{len(metrics['missing_masks'])} diseased images have no ground-truth mask and are left out of "
                "the pixel metrics: " + ", ".join(os.path.basename(m) for m in metrics["missing_masks"][:20])
            )
        if metrics["failed"]:
            notes.append(f"{len(metrics['failed'])} files could not be read (see metrics.json 'failed').")
        write_text_atomic(out / "report.md", markdown_report(metrics, files, notes))
        write_text_atomic(out / "failures.json", json.dumps(metrics["failed"], indent=2) + "\n")
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        self.failures.remove()
        summary = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} n/a"
            for k, v in ((k, metrics[k]) for k in ("image_auroc", "image_ap", "pixel_dice", "pixel_auroc"))
        )
        logger.info(f"evaluation ({metrics['mode']}, {metrics['num_images']} images): {summary}; report in {out}")
        for note in notes:
            logger.warning(note)
        if self.calibration_path:
            self.write_operating_point(self.calibration_path)

    def write_operating_point(self, path: str | os.PathLike) -> dict[str, Any]:
        """Store the operating point calibrated on this split (:func:`calibrated_operating_point`)."""
        point = calibrated_operating_point(self.split, self.metrics, self.score_rule, self.score_smoothing)
        save_operating_point(path, point)
        logger.info(f"operating point written to {path}: {point}")
        return point

    def finish(self, fail_on_skipped: bool = True) -> dict[str, Any]:
        """End of the run: exit status 2 when files could not be read and ``fail_on_skipped``."""
        if self.metrics.get("num_failed") and fail_on_skipped:
            raise SystemExit(2)
        return self.metrics
