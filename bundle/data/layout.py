"""The dataset folder layout: split folders, the derived folders the bundle writes beside the images, and the
names of derived files. One place for "where does X live"::

    <dataset_dir>/train/healthy/...                       training images (healthy only)
    <dataset_dir>/val/{healthy,diseased}/...              optional validation images
    <dataset_dir>/test/{healthy,diseased}/...             test images
    <dataset_dir>/ground_truth[/diseased]/<stem>.<ext>    lesion masks of diseased images
    <dataset_dir>/lungs/<relative folder>/<stem>.png      lung-map cache (``monai.bundle run lungs``)
    <dataset_dir>/synthetic/<relative folder>/<stem>_v<k>[_mask].png   offline anomalies (``run synthesize``)

``<stem>`` is the file name without its image suffix (:func:`image_stem`).
"""

from __future__ import annotations

import os
from pathlib import Path

from bundle.io import SUPPORTED_EXTENSIONS

__all__ = [
    "TRAIN_SPLITS",
    "TEST_SPLITS",
    "GROUND_TRUTH",
    "LUNGS",
    "SYNTHETIC",
    "DERIVED_FOLDERS",
    "NOT_INPUT_FOLDERS",
    "image_stem",
    "derived_path",
    "variant_paths",
]

#: split folders of training data, and of evaluation data
TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("val", "test")
#: lesion masks of diseased images
GROUND_TRUTH = "ground_truth"
#: derived folders the bundle writes inside a dataset folder
LUNGS = "lungs"
SYNTHETIC = "synthetic"
DERIVED_FOLDERS = (LUNGS, SYNTHETIC)
#: top-level folders of a dataset that never hold chest X-rays to process
NOT_INPUT_FOLDERS = DERIVED_FOLDERS + (GROUND_TRUTH,)

# longest first, so ``.nii.gz`` wins over a bare ``.gz``-less ``.nii``
_SUFFIXES = tuple(sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True))


def image_stem(name: str | os.PathLike) -> str:
    """A file name without its image suffix: ``a.png`` -> ``a``, ``a.nii.gz`` -> ``a``, ``b.dcm.png`` -> ``b.dcm``.

    Only a supported image suffix is removed, so DICOM files named by UID (``1.2.840.113619.2.5``) or without
    an extension keep their whole name and never collide.
    """
    name = os.path.basename(os.fspath(name))
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def derived_path(
    image_path: str | os.PathLike, dataset_dir: str | os.PathLike, derived_dir: str | os.PathLike, suffix: str = ".png"
) -> Path:
    """``<derived_dir>/<folder of the image relative to dataset_dir>/<stem><suffix>``: where a file derived from
    ``image_path`` lives (a lung map in the lung cache, the base name of its offline variants).

    Raises:
        ValueError: the image is not inside ``dataset_dir``.
    """
    image = Path(os.path.abspath(image_path))
    root = Path(os.path.abspath(dataset_dir))
    try:
        rel = image.relative_to(root)
    except ValueError:
        raise ValueError(f"{image} is not inside the dataset folder {root}, so it has no derived-file path.") from None
    return Path(derived_dir) / rel.parent / f"{image_stem(rel.name)}{suffix}"


def variant_paths(
    image_path: str | os.PathLike, dataset_dir: str | os.PathLike, synthetic_dir: str | os.PathLike, k: int
) -> tuple[Path, Path]:
    """(anomalous image, mask) paths of offline variant ``k`` (1-based) of ``image_path``."""
    base = derived_path(image_path, dataset_dir, synthetic_dir, suffix="")
    return base.with_name(f"{base.name}_v{k}.png"), base.with_name(f"{base.name}_v{k}_mask.png")
