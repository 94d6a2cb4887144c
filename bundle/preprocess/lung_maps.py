"""The offline lung-map cache job: ``python -m monai.bundle run lungs --config_file configs/preprocess.json``.

Writes a lossless uint8 PNG lung label map for each image, mirroring the dataset layout under
``<dataset_dir>/lungs`` (see :mod:`bundle.data.layout`), which :class:`~bundle.lungs.transforms.PBTSegd` then
reads instead of recomputing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bundle.data.datalist import split_images
from bundle.data.layout import LUNGS, TEST_SPLITS, TRAIN_SPLITS
from bundle.io import atomic_write, read_image, read_labels, write_png
from bundle.lungs.cache import STAMP_NAME, lung_cache_path, stamp_matches, write_stamp
from bundle.lungs.pbtseg import PBTSegParams, pbtseg
from bundle.options import as_bool
from bundle.preprocess.montage import records_montage
from bundle.preprocess.runner import WorkItem, run_offline_job

__all__ = ["lung_map_items", "compute_lung_map", "LungMapJob"]

logger = logging.getLogger(__name__)


def lung_map_items(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, include_test: bool = False) -> list:
    """Work items (image -> lung map PNG) for a dataset in the published layout.

    Images are the supported files under ``<dataset_dir>/train`` (plus ``val`` and ``test`` with
    ``include_test``); a folder without ``train/`` is taken as a plain image folder (every supported image under
    it except ``ground_truth/``). Outputs mirror the layout under ``output_dir`` (:func:`lung_cache_path`).
    """
    splits = TRAIN_SPLITS + (TEST_SPLITS if include_test else ())
    out = Path(output_dir)
    return [WorkItem(p, (str(lung_cache_path(p, dataset_dir, out)),)) for p in split_images(dataset_dir, splits)]


def compute_lung_map(item: Any, params: PBTSegParams | None = None) -> dict:
    """Offline job function: read ``item.source``, run :func:`pbtseg` at the original resolution, write the
    uint8 label map losslessly to ``item.outputs[0]`` (atomically; an empty map when no lung was found)."""
    image, _ = read_image(item.source)
    labels, info = pbtseg(image, params)
    write_png(item.outputs[0], labels)
    flags = []
    if not info["found"]:
        flags.append("no lung")
    elif len(info["lungs"]) == 1:
        flags.append("one lung")
    return {"flags": flags, "lungs": info["lungs"], "shape": list(labels.shape), "reason": info["reason"]}


class LungMapJob:
    """The offline lung-map cache job (run id ``lungs`` of ``configs/preprocess.json``).

    Writes a lossless uint8 PNG label map for every training image (and validation/test images with
    ``include_test``), mirroring the dataset layout under ``output_dir``, which :class:`PBTSegd` then reads with
    ``cache_dir=output_dir``. Sharded across torchrun ranks, parallel, resumable and reported by
    :func:`bundle.preprocess.runner.run_offline_job`; rank 0 also writes ``lungs_report.json``/``.csv`` (images with
    no lung
    carry the flag ``no lung``), ``lungs_no_lung.txt`` (those images, one per line) and ``lungs_qa.png``, a montage
    of sampled images with their lung contours.

    Args:
        dataset_dir: the dataset root (published layout or a plain image folder).
        output_dir: where the maps go; empty/None = ``<dataset_dir>/lungs``.
        include_test: also the ``val/`` and ``test/`` images (bool or "true"/"false").
        num_workers: worker processes per rank; None = CPU count / local ranks; 0 = in-process.
        overwrite: recompute maps that already exist. Without it, a folder that holds maps but no stamp of this
            PBTSeg with these ``params`` (``pbtseg_stamp.json``: the maps were written by another version, with
            other parameters, or before caches were stamped) is refused with an error, rather than resumed into a
            mix of old and new maps.
        montage_size: number of images in the QA montage (0 = none).
        progress: show a progress bar.
        params: :class:`PBTSegParams` or a dict of its fields.
    """

    name = "lungs"

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike | None = None,
        include_test: bool | str = False,
        num_workers: int | None = None,
        overwrite: bool | str = False,
        montage_size: int = 16,
        progress: bool | str = True,
        params: PBTSegParams | Mapping | None = None,
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir) if output_dir else self.dataset_dir / LUNGS
        self.include_test = as_bool(include_test)
        self.num_workers = None if num_workers in (None, "", "None") else int(num_workers)
        self.overwrite = as_bool(overwrite)
        self.montage_size = int(montage_size)
        self.progress = as_bool(progress)
        self.params = params if isinstance(params, PBTSegParams) else PBTSegParams(**dict(params or {}))

    def run(self) -> dict:
        """Run the job on this rank; returns the summary (see :func:`bundle.preprocess.runner.run_offline_job`).

        Raises ``ValueError`` when ``output_dir`` holds maps of another PBTSeg and ``overwrite`` is off."""
        if not self.overwrite and not stamp_matches(self.output_dir, self.params) and self._holds_maps():
            raise ValueError(
                f"lungs: {self.output_dir} holds lung maps without a {STAMP_NAME} of this PBTSeg (written by another "
                "version, with other parameters, or before caches were stamped); resuming would mix old and new maps. "
                "Rerun with --overwrite true to rebuild them, or choose another --output_dir."
            )
        # stamped before the first map, so that a resumed run finds it; every rank writes the same stamp
        write_stamp(self.output_dir, self.params)
        items = lung_map_items(self.dataset_dir, self.output_dir, self.include_test)
        logger.info("lungs: %d images under %s -> %s", len(items), self.dataset_dir, self.output_dir)
        return run_offline_job(
            self.name,
            items,
            partial(compute_lung_map, params=self.params),
            self.output_dir,
            num_workers=self.num_workers,
            overwrite=self.overwrite,
            progress=self.progress,
            after=self._finish,
        )

    def _holds_maps(self) -> bool:
        """Whether ``output_dir`` holds any lung map (a PNG other than the QA montage)."""
        return self.output_dir.is_dir() and any(p.name != "lungs_qa.png" for p in self.output_dir.rglob("*.png"))

    def _finish(self, records: list[dict]) -> None:
        """Rank 0, after the merge: ``lungs_no_lung.txt`` (one image per line) and the QA montage."""
        no_lung = [r["source"] for r in records if "no lung" in r["flags"]]
        with atomic_write(self.output_dir / "lungs_no_lung.txt") as tmp:
            Path(tmp).write_text("".join(f"{s}\n" for s in no_lung))
        if no_lung:
            logger.warning(
                "lungs: no lung found in %d image(s), listed in %s", len(no_lung), self.output_dir / "lungs_no_lung.txt"
            )

        # QA montage of evenly spaced images with their lung contours; no-lung images framed in red
        def tile(r: dict) -> tuple[np.ndarray, np.ndarray, bool]:
            return read_image(r["source"])[0], read_labels(r["outputs"][0]), "no lung" in r["flags"]

        path = records_montage(records, tile, self.output_dir / "lungs_qa.png", self.montage_size)
        if path is not None:
            logger.info("lungs: QA montage %s (lung 1 orange, lung 2 cyan; red frame = no lung)", path)
