"""Batch inference plumbing for ``configs/inference.json``: input lists, bad-file tolerance, output writing.

The workflow streams: images are read, segmented, reconstructed and written one batch at a time, so memory
does not grow with the number of files (only one small row per image is kept for the scores table).

Outputs for an input ``<dataset_dir>/<sub>/<name>.<ext>`` (names relative to the scanned folder, or to the
common parent folder of the files of a datalist):

- ``<output_dir>/<sub>/<name>_mask.png``: binary anomaly mask, uint8 0/1 (multiply by 255 to view), the
  input's own size. NIfTI inputs get ``<name>_mask.nii.gz`` in the input's own layout and affine instead.
  DICOM inputs get a PNG in the displayed orientation (row 0 = top, column 0 = image left).
- ``<output_dir>/<sub>/<name>_error.tiff``: the float32 error map ``(image - recon)^2`` at the input's size,
  as a 32-bit float TIFF (``_error.nii.gz`` for NIfTI inputs).
- ``<output_dir>/<sub>/<name>_overlay.png``: RGB picture for people: the image, the error as a heat map and
  the mask contour (longest side at most ``overlay_max_size``).
- ``<output_dir>/scores.csv`` and ``scores.json``: one row per processed image (file, score, predicted
  label at the operating threshold, lungs found, mask area fraction, size, output names), written once at
  the end.
- ``<output_dir>/failures.csv`` and ``failures.json``: the files that could not be processed, with the
  reason (always written, empty when nothing failed).

If two inputs would share an output name (``a.png`` and ``a.dcm`` in one folder) the extension is kept in
the name (``a_png_mask.png``, ``a_dcm_mask.png``). Every file is written to a temporary name and renamed, so
an interrupted run or a rerun never leaves a partial file; a rerun replaces outputs file by file and the
tables only when it completes. Exit status of ``python -m monai.bundle run``: 0 when every file was
processed, 2 when some were skipped (their outputs from an earlier run, if any, are left untouched), 1 on
any other error (e.g. no input images).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Events
from PIL import Image
from tqdm import tqdm

from bundle.data.datalist import build_datalist
from bundle.data.failures import FailureLog, failure_reason, meta_of
from bundle.data.layout import NOT_INPUT_FOLDERS, image_stem
from bundle.evaluation.report import csv_text, overlay_image
from bundle.io import (
    SUPPORTED_EXTENSIONS,
    as_2d,
    atomic_write,
    is_supported,
    read_image,
    save_rgb_png,
    write_nifti,
    write_png,
    write_text_atomic,
)

__all__ = [
    "inference_datalist",
    "output_stems",
    "write_float_tiff",
    "AnomalyOutputWriter",
]

logger = logging.getLogger(__name__)

#: side-car files found in data folders that are silently ignored by the folder scan (anything else that is
#: not a supported image is reported as skipped)
SIDECAR_EXTENSIONS = (".json", ".csv", ".txt", ".md", ".yaml", ".yml", ".log")


def _strip_ext(path: str) -> str:
    """``path`` without its image suffix (folders kept)."""
    return os.path.join(os.path.dirname(path), image_stem(path))


def inference_datalist(source: str | os.PathLike, exclude: Sequence[str | os.PathLike | None] = ()) -> list[dict]:
    """Items ``{"image": path}`` for every image to process.

    Args:
        source: a folder (scanned recursively for supported files, skipping the top-level sub-folders in
            :data:`bundle.data.layout.NOT_INPUT_FOLDERS`, hidden files and the side-car files of
            :data:`SIDECAR_EXTENSIONS`; any
            other file that is not a supported image is kept, to be reported as skipped), a datalist file (JSON or
            CSV, see :func:`bundle.data.datalist.build_datalist`: its
            ``test`` entries, or all entries when it has none), or a single image file.
        exclude: folders whose files are never taken as inputs (e.g. the output folder inside the input);
            a folder input that is itself excluded is an error.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no supported image was found (the message names the folder).
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"dataset_dir {str(source)!r} does not exist.")
    skip = [Path(e).resolve() for e in exclude if e]
    if src.is_dir():
        root = src.resolve()
        if root in skip:
            raise ValueError(f"output_dir must not be the input folder itself ({root}): choose another folder.")
        skip += [root / name for name in NOT_INPUT_FOLDERS]
        files = []
        for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
            here = Path(dirpath).resolve()
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d) not in skip)
            # every other non-hidden file is a candidate: unsupported ones are reported, not silently dropped
            files += [
                os.path.join(dirpath, f)
                for f in sorted(filenames)
                if not f.startswith(".") and os.path.splitext(f)[1].lower() not in SIDECAR_EXTENSIONS
            ]
        if not any(is_supported(f) for f in files):
            raise ValueError(
                f"no supported images found under {str(source)!r} (looked recursively for "
                f"{', '.join(SUPPORTED_EXTENSIONS)} and DICOM files)."
            )
        return [{"image": f} for f in files]
    if src.suffix.lower() in (".json", ".csv"):
        datalist = build_datalist(str(src))
        entries = datalist.get("test") or [e for k in ("training", "validation", "test") for e in datalist.get(k, [])]
        seen, items = set(), []
        for e in entries:
            if e["image"] not in seen:
                seen.add(e["image"])
                items.append({"image": e["image"]})
        if not items:
            raise ValueError(f"datalist {str(source)!r} lists no images.")
        return items
    return [{"image": str(src)}]


def output_stems(files: Sequence[str], base: str | os.PathLike | None = None) -> dict[str, str]:
    """Output name stem (relative path without the image extension) for each input file.

    Args:
        files: input paths.
        base: folder the names are relative to; default the files' common parent folder.

    Returns:
        ``{file: stem}``; stems that would collide keep their extension (``a_png``, ``a_dcm``).
    """
    files = [str(f) for f in files]
    if not files:
        return {}
    absolute = [os.path.abspath(f) for f in files]
    if base is None or not os.path.isdir(base):
        base = os.path.commonpath([os.path.dirname(a) for a in absolute])
    rel = {f: os.path.relpath(a, os.path.abspath(base)) for f, a in zip(files, absolute, strict=True)}
    stems = {f: _strip_ext(r) for f, r in rel.items()}
    counts: dict[str, int] = {}
    for s in stems.values():
        counts[s] = counts.get(s, 0) + 1
    return {f: (r.replace(".", "_") if counts[stems[f]] > 1 else stems[f]) for f, r in rel.items()}


def write_float_tiff(path: str | os.PathLike, array2d: Any) -> Path:
    """Write a 2D float array as a 32-bit float TIFF (lossless), atomically.

    Args:
        path: destination ``.tif``/``.tiff``.
        array2d: (H, W) or (1, H, W) array or tensor, indexed [row, column].
    """
    arr = as_2d(array2d).astype(np.float32)
    with atomic_write(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr), mode="F").save(tmp, format="TIFF")
    return Path(path)


class AnomalyOutputWriter:
    """Ignite handler writing each image's outputs as it is processed, and the tables at the end.

    Attach to the inference evaluator (``val_handlers``). It reads the post-processed items: ``pred``
    (the mask at the input's own size), ``error_key`` (error map at the input's size), ``score_key``,
    ``lungs_found_key``, and the input file name from the image meta.

    Args:
        output_dir: output folder (created).
        data: the inference items (used for output names and the progress bar total).
        failures: the :class:`FailureLog` the dataset records into.
        dataset_dir: folder output names are relative to (a folder input; else the files' common parent).
        score_threshold: image label 1 when ``score >= score_threshold``; None leaves the label empty.
        score_rule: name of the score rule (recorded in scores.json).
        mask_rule: description of the mask rule (recorded in scores.json).
        write_error: write the float error maps.
        write_overlay: write the overlay PNGs.
        overlay_max_size: longest side of overlay pictures (larger inputs are shown downscaled).
        progress: show a tqdm progress bar.
        pred_key, error_key, score_key, lungs_found_key, image_key: item keys.
    """

    SCORE_COLUMNS = (
        "file",
        "score",
        "predicted_label",
        "lungs_found",
        "mask_fraction",
        "height",
        "width",
        "mask",
        "error_map",
        "overlay",
    )

    def __init__(
        self,
        output_dir: str | os.PathLike,
        data: Sequence[dict],
        failures: FailureLog,
        dataset_dir: str | os.PathLike | None = None,
        score_threshold: float | None = None,
        score_rule: str = "mean",
        mask_rule: str = "",
        write_error: bool = True,
        write_overlay: bool = True,
        overlay_max_size: int = 1024,
        progress: bool = True,
        pred_key: str = "pred",
        error_key: str = "error",
        score_key: str = "score",
        lungs_found_key: str = "lungs_found",
        image_key: str = "image",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.files = [str(d[image_key]) for d in data]
        self.stems = output_stems(self.files, dataset_dir)
        self._by_abspath = {os.path.abspath(f): f for f in self.files}
        self.failures = failures
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.score_rule, self.mask_rule = score_rule, mask_rule
        self.write_error, self.write_overlay = write_error, write_overlay
        self.overlay_max_size, self.progress = overlay_max_size, progress
        self.pred_key, self.error_key, self.score_key = pred_key, error_key, score_key
        self.lungs_found_key, self.image_key = lungs_found_key, image_key
        self.rows: list[dict] = []
        self._bar = None

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Any = None) -> None:
        self.rows = []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.progress:
            self._bar = tqdm(total=len(self.files), desc="inference", unit="img", dynamic_ncols=True)

    def iteration_completed(self, engine: Any) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            src = str(meta_of(item[self.image_key]).get("filename_or_obj", ""))
            file = self._by_abspath.get(os.path.abspath(src), src)
            try:
                self.rows.append(self.write_item(file, item))
            except Exception as e:  # e.g. disk full or permissions: report, keep going
                self.failures.record(file, f"writing outputs failed: {failure_reason(e)}")
        if self._bar is not None:  # skipped files count as done too
            self._bar.update(len(self.rows) + self.failures.count - self._bar.n)

    def write_item(self, file: str, item: dict) -> dict:
        """Write mask, error map and overlay of one item; return its scores-table row."""
        meta = meta_of(item[self.image_key])
        mask = (as_2d(item[self.pred_key]) > 0).astype(np.uint8)
        error = as_2d(item[self.error_key]).astype(np.float32)
        shape = tuple(int(v) for v in np.asarray(meta.get("original_shape", mask.shape)).reshape(-1)[:2])
        if mask.shape != shape or error.shape != shape:
            raise ValueError(f"outputs {mask.shape}/{error.shape} were not restored to the input size {shape}")
        stem = self.output_dir / self.stems.get(file, _strip_ext(os.path.basename(file)))
        nifti = str(meta.get("format", "")) == "nifti"
        names: dict[str, str | None] = {"mask": None, "error_map": None, "overlay": None}
        mask_path = Path(f"{stem}_mask.nii.gz" if nifti else f"{stem}_mask.png")
        if nifti:
            write_nifti(mask_path, mask, like_meta=meta)
        else:
            write_png(mask_path, mask)
        names["mask"] = mask_path.relative_to(self.output_dir).as_posix()
        if self.write_error:
            error_path = Path(f"{stem}_error.nii.gz" if nifti else f"{stem}_error.tiff")
            if nifti:
                write_nifti(error_path, error, like_meta=meta)
            else:
                write_float_tiff(error_path, error)
            names["error_map"] = error_path.relative_to(self.output_dir).as_posix()
        if self.write_overlay:
            image, _ = read_image(file)  # the original pixels, not the model-size copy
            overlay_path = Path(f"{stem}_overlay.png")
            save_rgb_png(overlay_path, overlay_image(image, error, mask, max_size=self.overlay_max_size))
            names["overlay"] = overlay_path.relative_to(self.output_dir).as_posix()
        score = float(item[self.score_key])
        lungs = item.get(self.lungs_found_key)
        return {
            "file": file,
            "score": score,
            "predicted_label": None if self.score_threshold is None else int(score >= self.score_threshold),
            "lungs_found": None if lungs is None else int(lungs),
            "mask_fraction": float(mask.mean()),
            "height": shape[0],
            "width": shape[1],
            **names,
        }

    def completed(self, engine: Any = None) -> None:
        failures = self.failures.read()
        if self._bar is not None:
            self._bar.update(max(0, len(self.rows) + len(failures) - self._bar.n))
            self._bar.close()
            self._bar = None
        rows = sorted(self.rows, key=lambda r: r["file"])
        summary = {
            "score_rule": self.score_rule,
            "score_threshold": self.score_threshold,
            "mask_rule": self.mask_rule,
            "num_inputs": len(self.files),
            "num_processed": len(rows),
            "num_failed": len(failures),
            "images": rows,
        }
        write_text_atomic(self.output_dir / "scores.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(self.output_dir / "scores.csv", csv_text(rows, self.SCORE_COLUMNS))
        write_text_atomic(self.output_dir / "failures.json", json.dumps(failures, indent=2) + "\n")
        write_text_atomic(self.output_dir / "failures.csv", csv_text(failures, ("file", "reason")))
        self.failures.remove()
        logger.info(
            f"inference: {len(rows)} of {len(self.files)} files processed, {len(failures)} skipped; "
            f"outputs in {self.output_dir}"
        )
        for f in failures:
            logger.warning(f"  skipped {f['file']}: {f['reason']}")

    def finish(self, fail_on_skipped: bool = True) -> int:
        """End of the run: exit status 2 (``SystemExit``) when files were skipped and ``fail_on_skipped``.

        Returns:
            the number of skipped files (when not exiting).
        """
        with open(self.output_dir / "failures.json") as f:
            failed = len(json.load(f))
        if failed and fail_on_skipped:
            raise SystemExit(2)
        return failed
