"""Offline anomalous variants, as in the paper: ``python -m monai.bundle run synthesize --config_file
configs/preprocess.json``.

For every healthy training image the job writes K anomalous variants (K drawn per image from
``variants``, default 1 to 3 as published) with their lossless masks, mirroring the dataset layout:

    <dataset_dir>/synthetic/<relative folder>/<stem>_v<k>.png        anomalous image (16-bit PNG)
    <dataset_dir>/synthetic/<relative folder>/<stem>_v<k>_mask.png   0/1 mask (8-bit PNG)

Everything is seeded per image (job seed + relative path), so a rerun, a resumed run or another
number of ranks writes identical files. Lung maps come from the lung cache (``monai.bundle run
lungs``) when present, else PBTSeg runs on the image. Sharding, parallelism, resuming, atomic writes,
progress and the report are :func:`bundle.preprocess.runner.run_offline_job`'s. Training reads the variants
back through :func:`offline_variant_datalist`.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bundle.data.datalist import split_images
from bundle.data.layout import LUNGS, SYNTHETIC, derived_path, variant_paths
from bundle.io import read_image, read_labels, write_png
from bundle.lungs.cache import cached_lung_map
from bundle.lungs.pbtseg import pbtseg
from bundle.options import as_bool
from bundle.preprocess.montage import records_montage
from bundle.preprocess.runner import WorkItem, run_offline_job
from bundle.synthesis.transforms import RandTextureAnomaly

__all__ = ["synthesis_items", "synthesize_variants", "SyntheticAnomalyJob", "offline_variant_datalist"]

logger = logging.getLogger(__name__)


def _image_seed(seed: int, rel: str) -> int:
    """A per-image seed from the job seed and the image's relative path (stable across runs and ranks)."""
    return (int(seed) * 1_000_003 + zlib.crc32(rel.replace(os.sep, "/").encode())) % (2**31 - 1)


def synthesis_items(
    dataset_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike,
    variants: int | Sequence[int] = (1, 3),
    seed: int = 0,
) -> list:
    """Work items (healthy image -> its variant images and masks); the number of variants K is drawn per image."""
    low, high = _variant_range(variants)
    root = Path(dataset_dir).absolute()
    items = []
    for path in split_images(root):
        rel = str(Path(path).relative_to(root))
        s = _image_seed(seed, rel)
        k = low if low == high else int(np.random.RandomState(s).randint(low, high + 1))
        outputs = tuple(str(p) for i in range(1, k + 1) for p in variant_paths(path, root, synthetic_dir, i))
        items.append(WorkItem(path, outputs, {"seed": s, "variants": k}))
    return items


def _variant_range(variants: int | Sequence[int]) -> tuple[int, int]:
    low, high = (
        (int(variants), int(variants)) if isinstance(variants, (int, np.integer, str)) else (int(v) for v in variants)
    )
    if low < 1 or high < low:
        raise ValueError(f"variants must be an int >= 1 or a (low, high) range with 1 <= low <= high, got {variants}")
    return low, high


def _lung_map(
    image_path: str, image: np.ndarray, dataset_dir: str | None, lungs_dir: str | None
) -> tuple[np.ndarray, str]:
    """The cached lung map when it exists and fits the image, else PBTSeg's."""
    if lungs_dir and dataset_dir:
        labels = cached_lung_map(image_path, image.shape, dataset_dir, lungs_dir)
        if labels is not None:
            return labels, "cache"
    labels, _ = pbtseg(image)
    return labels, "pbtseg"


def synthesize_variants(
    item: Any, dataset_dir: str | None = None, lungs_dir: str | None = None, options: Mapping | None = None
) -> dict:
    """Offline job function: write the item's anomalous variants and masks (atomically, losslessly).

    ``item.extra`` holds the image's ``seed`` and number of ``variants``; ``options`` are
    :class:`bundle.synthesis.transforms.RandTextureAnomaly` arguments. An image without lungs gets unchanged copies
    with empty masks and the flag ``no lung``.
    """
    image, _ = read_image(item.source)
    lung, lung_source = _lung_map(item.source, image, dataset_dir, lungs_dir)
    synth = RandTextureAnomaly(prob=1.0, **dict(options or {}))
    synth.set_random_state(int(item.extra["seed"]))
    areas, flags = [], []
    for k in range(int(item.extra["variants"])):
        ((out, mask, info),) = synth.variants(image[None], lung[None], 1)
        write_png(item.outputs[2 * k], out[0], bits=16)
        write_png(item.outputs[2 * k + 1], mask[0].astype(np.uint8))
        areas.append(round(float(info["lung_fraction"]), 4))
        if info["reason"] and info["reason"] not in flags:
            flags.append(info["reason"])
    return {"flags": flags, "lung_source": lung_source, "lung_fraction": areas}


class SyntheticAnomalyJob:
    """The offline anomaly job (run id ``synthesize`` of ``configs/preprocess.json``).

    Args:
        dataset_dir: the dataset root (published layout: the images under ``train/``).
        output_dir: where the variants go; empty/None = ``<dataset_dir>/synthetic``.
        lungs_dir: the lung cache to read (default ``<dataset_dir>/lungs``); PBTSeg runs where it has no map.
        variants: variants per image, an int or an inclusive (low, high) range drawn per image (published: 1 to 3).
        seed: job seed; each image's draws are seeded from it and the image's relative path.
        num_workers: worker processes per rank; None = CPU count / local ranks; 0 = in-process.
        overwrite: rewrite variants that already exist.
        montage_size: variants shown in the QA montage ``synthesize_qa.png`` (mask contours; 0 = none).
        progress: show a progress bar.
        synthesis: :class:`bundle.synthesis.transforms.RandTextureAnomaly` arguments (brush, parameters).
        brush: brush texture file (any grayscale image the bundle reads; bright = paint), e.g. the
            published ``texture.jpg``; None/empty: the procedural brush (or ``synthesis["brush"]``).
    """

    name = "synthesize"

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike | None = None,
        lungs_dir: str | os.PathLike | None = None,
        variants: int | Sequence[int] = (1, 3),
        seed: int = 0,
        num_workers: int | None = None,
        overwrite: bool | str = False,
        montage_size: int = 16,
        progress: bool | str = True,
        synthesis: Mapping | None = None,
        brush: str | os.PathLike | None = None,
    ) -> None:
        self.dataset_dir = Path(dataset_dir).absolute()
        self.output_dir = Path(output_dir) if output_dir else self.dataset_dir / SYNTHETIC
        self.lungs_dir = Path(lungs_dir) if lungs_dir else self.dataset_dir / LUNGS
        self.variants = _variant_range(variants)
        self.seed = int(seed)
        self.num_workers = None if num_workers in (None, "", "None") else int(num_workers)
        self.overwrite = as_bool(overwrite)
        self.montage_size = int(montage_size)
        self.progress = as_bool(progress)
        self.synthesis = dict(synthesis or {})
        if brush is not None and str(brush).strip().lower() not in ("", "none", "null"):
            if self.synthesis.get("brush") not in (None, str(brush)):
                raise ValueError(
                    f"synthesize: brush {brush!r} and synthesis['brush'] {self.synthesis['brush']!r} disagree; give one"
                )
            if not Path(brush).is_file():
                raise FileNotFoundError(
                    f"synthesize: --brush {brush}: no such file (a grayscale image; null for the procedural brush)"
                )
            self.synthesis["brush"] = str(Path(brush).absolute())

        RandTextureAnomaly(**self.synthesis)  # fail now, with the parameter's name, not once per image

    def run(self) -> dict:
        """Run the job on this rank; returns the summary (see :func:`bundle.preprocess.runner.run_offline_job`)."""
        items = synthesis_items(self.dataset_dir, self.output_dir, self.variants, self.seed)
        logger.info(
            "synthesize: %d healthy images under %s -> %s (%d to %d variants each)",
            len(items),
            self.dataset_dir,
            self.output_dir,
            *self.variants,
        )
        func = partial(
            synthesize_variants,
            dataset_dir=str(self.dataset_dir),
            lungs_dir=str(self.lungs_dir),
            options=self.synthesis,
        )
        return run_offline_job(
            self.name,
            items,
            func,
            self.output_dir,
            num_workers=self.num_workers,
            overwrite=self.overwrite,
            progress=self.progress,
            after=self._montage,
        )

    def _montage(self, records: list[dict]) -> None:
        """QA montage: first variants of evenly spaced images with their mask contours."""

        def tile(r: dict) -> tuple[np.ndarray, np.ndarray, bool]:
            return read_image(r["outputs"][0])[0], read_labels(r["outputs"][1]), bool(r["flags"])

        path = records_montage(records, tile, self.output_dir / "synthesize_qa.png", self.montage_size)
        if path is not None:
            logger.info("synthesize: QA montage %s (mask contours orange; red frame = flagged)", path)


_VARIANT = re.compile(r"^(?P<stem>.+)_v(?P<k>\d+)\.png$")


def offline_variant_datalist(
    dataset_dir: str | os.PathLike,
    images: Iterable[str | Mapping] | None = None,
    synthetic_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Datalist entries for the offline variants: ``{"image": variant, "target": healthy, "anomaly_mask": mask}``.

    Args:
        dataset_dir: the dataset root the variants mirror.
        images: the healthy images to take variants of (paths or datalist entries with ``"image"``), e.g.
            the training split; default: every training image (:func:`bundle.data.datalist.split_images`).
        synthetic_dir: where the variants are; default ``<dataset_dir>/synthetic``.

    Raises:
        FileNotFoundError: when none of the images has a variant (the job has not been run).
    """
    root = Path(dataset_dir).absolute()
    synthetic_dir = Path(synthetic_dir) if synthetic_dir else root / SYNTHETIC
    paths = split_images(root) if images is None else [e["image"] if isinstance(e, Mapping) else e for e in images]
    entries = []
    for path in paths:
        base = derived_path(path, root, synthetic_dir, suffix="")
        if not base.parent.is_dir():
            continue
        found = []
        for candidate in base.parent.glob(f"{_glob_escape(base.name)}_v*.png"):
            m = _VARIANT.match(candidate.name)
            mask = candidate.with_name(f"{base.name}_v{m.group('k')}_mask.png") if m else None
            if m and m.group("stem") == base.name and mask.is_file():
                found.append((int(m.group("k")), str(candidate), str(mask)))
        entries.extend({"image": v, "target": str(path), "anomaly_mask": mk} for _, v, mk in sorted(found))
    if not entries:
        raise FileNotFoundError(
            f"no offline anomaly variants under {synthetic_dir}; run `python -m monai.bundle run synthesize "
            f"--config_file configs/preprocess.json --dataset_dir {root}` first, or use online synthesis"
        )
    return entries


def _glob_escape(name: str) -> str:
    """Escape glob metacharacters in a file name."""
    return re.sub(r"([*?\[])", r"[\1]", name)
