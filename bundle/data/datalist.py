"""Decathlon-style datalists from the published folder layout, a CSV, or an existing datalist JSON.

A datalist is ``{"training": [...], "validation": [...], "test": [...]}``; every entry is a dict with
``image`` (absolute path), ``label`` (0 healthy, 1 diseased) and, where a ground-truth mask exists,
``mask`` (absolute path). Entries are sorted by path, so the same data always give the same list.

Folder layout (the one the ART-ASyn code and its users' datasets follow)::

    <root>/train/healthy/...            training images (healthy only)
    <root>/val/healthy/..., val/diseased/...     optional validation images
    <root>/test/healthy/..., test/diseased/...   test images
    <root>/ground_truth/<name>  or  <root>/ground_truth/diseased/<name>
                                        masks of diseased images: same file stem (any supported extension;
                                        ``mask_<stem>`` is accepted too, as QaTa-COV19 names them)

Image folders are scanned recursively; hidden files and folders are skipped, and so are the derived
folders ``lungs/`` and ``synthetic/`` that the bundle writes beside the data.

CSV: a header row with the columns ``image``, ``label`` and optionally ``mask`` and ``split``
(``training``/``train``, ``validation``/``val`` or ``test``; rows without a split go to ``test``).
Labels are ``0``/``1`` or ``healthy``/``diseased``; relative paths are relative to the CSV's folder.

Problems are never papered over: a missing root or class folder, an empty folder, a folder without a
supported image, an unreadable image or mask, a mask whose size differs from its image, or two files
that claim the same name raise :class:`DatalistError` naming the files; unsupported files in image
folders and diseased images without a mask give a :class:`DatalistWarning` naming them (such entries
simply have no ``mask`` key: there is never a default mask).

Command line::

    python -m bundle.data.datalist /data/zhanglab --output datalist.json [--val_fraction 0.1] [--verify]
"""

from __future__ import annotations

import csv
import json
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from monai.data import load_decathlon_datalist
from PIL import Image

from bundle.data.layout import (
    DERIVED_FOLDERS,
    GROUND_TRUTH,
    NOT_INPUT_FOLDERS,
    TRAIN_SPLITS,
    image_stem,
)
from bundle.io import CXRReadError, atomic_write, is_supported, read_image, read_labels

__all__ = [
    "DatalistError",
    "DatalistWarning",
    "build_datalist",
    "datalist_from_folders",
    "datalist_from_csv",
    "datalist_from_json",
    "scan_images",
    "split_train_val",
]

logger = logging.getLogger(__name__)

DATALIST_KEYS = ("training", "validation", "test")
_LABELS = {"0": 0, "1": 1, "healthy": 0, "diseased": 1}
_SPLITS = {"training": "training", "train": "training", "validation": "validation", "val": "validation", "test": "test"}
_MAX_LISTED = 20  # file names listed in one message


class DatalistError(ValueError):
    """The data cannot be turned into a datalist; the message names the files or folders at fault."""


class DatalistWarning(UserWarning):
    """Data that were skipped or are incomplete (unsupported files, diseased images without masks)."""


def _listing(paths: Iterable[Any]) -> str:
    paths = [str(p) for p in paths]
    shown = "\n  ".join(paths[:_MAX_LISTED])
    more = f"\n  ... and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return f"\n  {shown}{more}"


def _warn(message: str) -> None:
    warnings.warn(message, DatalistWarning, stacklevel=3)


def _walk(folder: Path, recursive: bool, skip_top: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(supported, unsupported) files under ``folder``, absolute and sorted; hidden entries skipped."""
    supported, unsupported = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        top = Path(dirpath) == folder
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (top and d in skip_top))
        if not recursive:
            dirnames[:] = []
        for name in filenames:
            if name.startswith("."):
                continue
            path = os.path.abspath(os.path.join(dirpath, name))
            (supported if is_supported(path) else unsupported).append(path)
    return sorted(supported), sorted(unsupported)


def scan_images(root: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Supported image files under ``root``, as sorted absolute paths.

    Hidden files and folders are skipped, and so are the derived folders ``lungs/`` and ``synthetic/``
    directly under ``root`` (the bundle's own outputs beside a dataset).

    Args:
        root: folder to scan.
        recursive: descend into subfolders.

    Raises:
        DatalistError: ``root`` is not a folder.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatalistError(f"{root}: not a folder")
    return _walk(root, recursive, DERIVED_FOLDERS)[0]


def split_images(dataset_dir: str | os.PathLike, splits: Sequence[str] = TRAIN_SPLITS) -> list[str]:
    """Images of the split folders ``splits`` of a dataset in the published layout, as sorted absolute paths.

    A folder without ``train/`` is taken as a plain image folder: every supported image under it except
    ``ground_truth/`` and the derived folders.

    Raises:
        FileNotFoundError: ``dataset_dir`` is not a folder.
    """
    root = Path(dataset_dir).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {root} is not a folder")
    if (root / TRAIN_SPLITS[0]).is_dir():
        return [p for s in splits if (root / s).is_dir() for p in scan_images(root / s)]
    return _walk(root, True, NOT_INPUT_FOLDERS)[0]


def _class_folder(folder: Path) -> list[str]:
    """Images of one class folder; errors for empty or image-less folders, warnings for skipped files."""
    if not folder.is_dir():
        raise DatalistError(f"{folder}: not a folder")
    images, unsupported = _walk(folder, recursive=True)
    if not images and not unsupported:
        raise DatalistError(f"{folder}: empty folder (no files)")
    if not images:
        raise DatalistError(f"{folder}: no supported images among its {len(unsupported)} files:{_listing(unsupported)}")
    if unsupported:
        _warn(f"{folder}: skipping {len(unsupported)} unsupported files:{_listing(unsupported)}")
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in images:
        by_name[os.path.join(os.path.dirname(path), image_stem(path))].append(path)
    clashes = [p for group in by_name.values() if len(group) > 1 for p in group]
    if clashes:
        raise DatalistError(f"{folder}: files that differ only in their extension (ambiguous):{_listing(clashes)}")
    return images


def _mask_index(root: Path) -> dict[str, list[str]]:
    """Mask files of ``ground_truth/`` and ``ground_truth/diseased/`` by file stem."""
    index: dict[str, list[str]] = defaultdict(list)
    for folder in (root / GROUND_TRUTH, root / GROUND_TRUTH / "diseased"):
        if folder.is_dir():
            masks, _ = _walk(folder, recursive=False)
            for path in masks:
                index[image_stem(path)].append(path)
    return index


def _header_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file from its header only (no pixel decoding)."""
    suffix = Path(path).name.lower()
    try:
        if suffix.endswith((".nii", ".nii.gz")):
            shape = [n for n in nib.load(path).shape]
            if len(shape) == 3 and shape.count(1) == 1:
                shape.remove(1)
            if len(shape) != 2:
                raise ValueError(f"NIfTI data of shape {tuple(shape)} is not 2D")
            return int(shape[1]), int(shape[0])  # on disk (x, y) = (columns, rows)
        if suffix.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
            with Image.open(path) as img:
                return int(img.size[1]), int(img.size[0])

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return int(ds.Rows), int(ds.Columns)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unreadable; say which and why
        raise CXRReadError(path, f"unreadable header ({type(e).__name__}: {e})") from e


def _check_entries(entries: list[dict], verify: bool) -> None:
    """Check that every image and mask opens and that masks match their image's size; one error lists all."""
    problems = []
    for entry in entries:
        try:
            size = read_image(entry["image"])[0].shape if verify else _header_size(entry["image"])
        except CXRReadError as e:
            problems.append(str(e))
            continue
        if "mask" not in entry:
            continue
        try:
            mask_size = read_labels(entry["mask"]).shape if verify else _header_size(entry["mask"])
        except CXRReadError as e:
            problems.append(str(e))
            continue
        if tuple(mask_size) != tuple(size):
            problems.append(
                f"{entry['mask']}: mask size {mask_size[0]}x{mask_size[1]} differs from its image "
                f"{entry['image']} ({size[0]}x{size[1]})"
            )
    if problems:
        raise DatalistError(f"{len(problems)} unreadable or inconsistent files:{_listing(problems)}")


def _attach_masks(diseased: list[str], index: dict[str, list[str]], where: str) -> list[dict]:
    """Diseased entries with their masks; errors for ambiguous matches, a warning for missing masks."""
    entries, missing, ambiguous = [], [], []
    owners: dict[str, list[str]] = defaultdict(list)
    for image in diseased:
        stem = image_stem(image)
        matches = sorted(set(index.get(stem, []) + index.get(f"mask_{stem}", [])))
        entry: dict[str, Any] = {"image": image, "label": 1}
        if len(matches) > 1:
            ambiguous.append(f"{image} -> " + ", ".join(matches))
        elif matches:
            entry["mask"] = matches[0]
            owners[matches[0]].append(image)
        else:
            missing.append(image)
        entries.append(entry)
    shared = [f"{mask} <- " + ", ".join(images) for mask, images in owners.items() if len(images) > 1]
    if ambiguous or shared:
        raise DatalistError(
            f"{where}: ambiguous ground-truth masks (one mask per diseased image by file name):"
            f"{_listing(ambiguous + shared)}"
        )
    if missing:
        _warn(f"{where}: {len(missing)} diseased images have no ground-truth mask (no Dice for them):{_listing(missing)}")
    return entries


def datalist_from_folders(
    root: str | os.PathLike, require_train: bool = True, require_test: bool = False, verify: bool = False
) -> dict[str, list[dict]]:
    """Datalist from the published folder layout (see the module docstring).

    Args:
        root: dataset folder.
        require_train: ``train/healthy`` must exist (training); otherwise it may be absent.
        require_test: ``test/healthy`` or ``test/diseased`` must exist (evaluation).
        verify: decode every image and mask (slow, thorough) instead of reading their headers only.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, entries sorted by path.

    Raises:
        DatalistError: see the module docstring.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatalistError(f"{root}: dataset folder not found")
    datalist: dict[str, list[dict]] = {key: [] for key in DATALIST_KEYS}
    train = root / "train" / "healthy"
    if train.exists() or require_train:
        if not train.exists():
            raise DatalistError(f"{train}: training folder not found (expected healthy training images there)")
        datalist["training"] = [{"image": p, "label": 0} for p in _class_folder(train)]
    index = _mask_index(root)
    for key, split in (("validation", "val"), ("test", "test")):
        healthy, diseased = root / split / "healthy", root / split / "diseased"
        if healthy.exists():
            datalist[key] += [{"image": p, "label": 0} for p in _class_folder(healthy)]
        if diseased.exists():
            datalist[key] += _attach_masks(_class_folder(diseased), index, str(diseased))
    if require_test and not datalist["test"]:
        raise DatalistError(f"{root}: no test images (expected {root / 'test' / 'healthy'} and/or {root / 'test' / 'diseased'})")
    if not any(datalist.values()):
        raise DatalistError(f"{root}: no train/, val/ or test/ class folders found")
    used = {e["mask"] for entries in datalist.values() for e in entries if "mask" in e}
    unused = sorted(p for paths in index.values() for p in paths if p not in used)
    if unused:
        _warn(f"{root / 'ground_truth'}: {len(unused)} masks match no diseased image:{_listing(unused)}")
    _check_entries([e for entries in datalist.values() for e in entries], verify)
    return datalist


def _parse_label(value: str, where: str) -> int:
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        raise DatalistError(f"{where}: label {value!r} is not one of 0, 1, healthy, diseased")
    return label


def datalist_from_csv(path: str | os.PathLike, verify: bool = False) -> dict[str, list[dict]]:
    """Datalist from a CSV file with the columns ``image``, ``label`` and optionally ``mask``, ``split``.

    Args:
        path: the CSV file (a header row is required; relative paths are relative to its folder).
        verify: decode every image and mask instead of reading their headers only.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``; rows without a ``split`` go to ``test``.

    Raises:
        DatalistError: missing file or columns, bad labels or splits, missing/unsupported/unreadable files,
            an image listed twice, a mask of the wrong size.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise DatalistError(f"{path}: CSV file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "image" not in columns or "label" not in columns:
            raise DatalistError(f"{path}: needs a header row with the columns image,label[,mask][,split]; got {columns}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise DatalistError(f"{path}: no rows")
    datalist: dict[str, list[dict]] = {key: [] for key in DATALIST_KEYS}
    missing, unsupported, seen, no_mask = [], [], {}, []
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        if not row.get("image"):
            raise DatalistError(f"{where}: empty image path")
        image = os.path.normpath(os.path.join(path.parent, row["image"]))
        entry: dict[str, Any] = {"image": image, "label": _parse_label(row.get("label", ""), where)}
        if row.get("mask"):
            entry["mask"] = os.path.normpath(os.path.join(path.parent, row["mask"]))
        split = _SPLITS.get(row.get("split", "test").lower() or "test")
        if split is None:
            raise DatalistError(f"{where}: split {row['split']!r} is not one of training, validation, test")
        if image in seen:
            raise DatalistError(f"{where}: image {image} is listed twice (first on line {seen[image]})")
        seen[image] = line
        for file in (entry["image"], entry.get("mask")):
            if file is None:
                continue
            if not os.path.isfile(file):
                missing.append(f"{file} (line {line})")
            elif not is_supported(file):
                unsupported.append(f"{file} (line {line})")
        if split == "training" and entry["label"] != 0:
            raise DatalistError(f"{where}: training images must be healthy (label 0); the method learns from healthy images only")
        if entry["label"] == 1 and "mask" not in entry:
            no_mask.append(image)
        datalist[split].append(entry)
    if missing or unsupported:
        raise DatalistError(
            f"{path}: {len(missing)} missing and {len(unsupported)} unsupported files:{_listing(missing + unsupported)}"
        )
    if no_mask and "mask" in columns:
        _warn(f"{path}: {len(no_mask)} diseased images have no ground-truth mask (no Dice for them):{_listing(no_mask)}")
    for key in DATALIST_KEYS:
        datalist[key].sort(key=lambda e: e["image"])
    _check_entries([e for entries in datalist.values() for e in entries], verify)
    return datalist


def datalist_from_json(path: str | os.PathLike, verify: bool = False) -> dict[str, list[dict]]:
    """An existing decathlon-style datalist JSON, read with MONAI's loader (paths resolved against its folder).

    Args:
        path: the JSON file.
        verify: decode every image and mask instead of reading their headers only.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` (absent keys give empty lists).
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise DatalistError(f"{path}: datalist file not found")
    try:
        content = json.loads(path.read_text())
    except ValueError as e:
        raise DatalistError(f"{path}: not valid JSON ({e})") from e
    datalist: dict[str, list[dict]] = {key: [] for key in DATALIST_KEYS}
    missing = []
    for key in DATALIST_KEYS:
        if not content.get(key):
            continue
        entries = load_decathlon_datalist(path, is_segmentation=False, data_list_key=key)
        for i, entry in enumerate(entries):
            if "mask" in entry:
                entry["mask"] = os.path.normpath(os.path.join(path.parent, entry["mask"]))
            if "label" in entry:
                entry["label"] = _parse_label(entry["label"], f"{path}, {key}[{i}]")
            missing += [entry[k] for k in ("image", "mask") if k in entry and not os.path.isfile(entry[k])]
        datalist[key] = entries
    if missing:
        raise DatalistError(f"{path}: {len(missing)} listed files do not exist:{_listing(missing)}")
    if not any(datalist.values()):
        raise DatalistError(f"{path}: no entries under {', '.join(DATALIST_KEYS)}")
    _check_entries([e for entries in datalist.values() for e in entries], verify)
    return datalist


def build_datalist(source: str | os.PathLike, verify: bool = False, **kwargs: Any) -> dict[str, list[dict]]:
    """Datalist from a dataset folder (published layout), a CSV file or a decathlon-style JSON file.

    Args:
        source: the folder or file.
        verify: decode every image and mask instead of reading their headers only.
        kwargs: passed on to :func:`datalist_from_folders` (``require_train``, ``require_test``).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``.
    """
    source = Path(source)
    if source.is_dir():
        return datalist_from_folders(source, verify=verify, **kwargs)
    if not source.exists():
        raise DatalistError(f"{source.absolute()}: no such dataset folder or datalist file")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return datalist_from_csv(source, verify=verify)
    if suffix == ".json":
        return datalist_from_json(source, verify=verify)
    raise DatalistError(f"{source.absolute()}: expected a dataset folder, a .csv or a .json datalist")


def split_train_val(entries: Sequence[dict], val_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic random split of ``entries`` into (training, validation).

    The result depends only on the set of images (entries are sorted by path first), ``val_fraction``
    and ``seed``; both parts keep the sorted order.

    Args:
        entries: datalist entries with an ``image`` key.
        val_fraction: share of entries for validation, in [0, 1); at least one entry when > 0 and
            there are two or more entries, and never all of them.
        seed: seed of the permutation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(entries, key=lambda e: str(e["image"]))
    n_val = int(round(val_fraction * len(ordered)))
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    picked = set(np.random.default_rng(seed).permutation(len(ordered))[:n_val].tolist())
    train = [e for i, e in enumerate(ordered) if i not in picked]
    val = [e for i, e in enumerate(ordered) if i in picked]
    return train, val


def _main(
    source: str,
    output: str = "datalist.json",
    val_fraction: float = 0.0,
    seed: int = 0,
    verify: bool = False,
    require_train: bool = True,
) -> str:
    """Command line: write the datalist of ``source`` to ``output`` (atomically), print a summary."""
    kwargs = {"require_train": require_train} if Path(source).is_dir() else {}
    datalist = build_datalist(source, verify=verify, **kwargs)
    if val_fraction > 0:
        if datalist["validation"]:
            raise DatalistError(f"{source}: already has validation images; drop --val_fraction")
        datalist["training"], datalist["validation"] = split_train_val(datalist["training"], val_fraction, seed)
    with atomic_write(output) as tmp:
        tmp.write_text(json.dumps(datalist, indent=4) + "\n")
    counts = ", ".join(f"{k}: {len(v)}" for k, v in datalist.items())
    n_masks = sum("mask" in e for e in datalist["test"])
    return f"wrote {output} ({counts}; {n_masks} test masks)"


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    fire.Fire(_main)
