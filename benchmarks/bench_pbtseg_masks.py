"""PBTSeg on real radiographs against hand-drawn lung masks, side by side with the published PBTSeg.

``bench_pbtseg.py`` measures PBTSeg on the bundle's phantoms, whose true lungs are known exactly. This script prints
the same Dice table (per lung, whole and by zone: upper / middle / lower third of the true lung's rows) on your own
radiographs with lung masks drawn by readers, so that the phantom figures can be checked on real films: the public
sets with lung masks (Montgomery County, Shenzhen, JSRT with the SCR masks converted to PNG), or a clinical film and
its hand-checked mask.

Images are read as the bundle reads them (``bundle.io.read_image``: PNG/JPEG/TIFF, DICOM, NIfTI; column 0 = the
image's left, which is the patient's right on a standard frontal film). Masks are matched to images by file name
(the image's stem, or the stem plus ``--mask-suffix``) and read with ``bundle.io.read_labels`` (PNG, TIFF, NIfTI):

- ``--masks DIR``: one mask per image. A mask with the values 0 / 1 / 2 (both labels present) is a label map in the
  bundle's contract (1 = the lung on the image's left); any other mask (0 / 255, ...) is a binary mask of both
  lungs, split into the two sides by each piece's centroid (Shenzhen: ``mask/CHNCXR_0001_0_mask.png``).
- ``--right-masks DIR --left-masks DIR``: one mask per lung, named by the patient's side (Montgomery:
  ``ManualMask/rightMask`` and ``ManualMask/leftMask``); the patient's right lung is label 1.

Masks may lie beside their images (``--masks`` the images' folder, masks named with a non-empty suffix). A mask
of another size than its image is resized (nearest) when the aspect ratios agree within 1 %, else the pair is
skipped. Every pair that cannot be scored (unreadable file, no mask, ambiguous names, sizes that do not fit) is
listed with the reason at the end; the rest are scored. ``--reference DIR`` (a clone of the published ART-ASyn code)
adds the published PBTSeg, run as published (8-bit, resized to 256 x 256, its map resized back), on the same images.

Run: ``python benchmarks/bench_pbtseg_masks.py --images DIR (--masks DIR | --right-masks DIR --left-masks DIR)
[--mask-suffix _mask] [--reference DIR] [--params JSON] [--limit N] [--list-below 0.85] [--picture PNG] [--csv FILE]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pbtseg import fit_tile, load_published, published_map, save_picture  # noqa: E402

from bundle.data.datalist import scan_images  # noqa: E402
from bundle.data.layout import image_stem  # noqa: E402
from bundle.evaluation.lung_dice import ZONES, dice_table, labels_swapped, truth_from_mask, truth_from_pair, zone_dice  # noqa: E402
from bundle.io import CXRReadError, read_image, read_labels, write_text_atomic  # noqa: E402
from bundle.lungs.pbtseg import PBTSegParams, pbtseg  # noqa: E402

#: largest relative difference of the image's and the mask's aspect ratios for which a mask is resized to its image
ASPECT_TOLERANCE = 0.01


#: side of each film in ``--picture``, pixels
PICTURE_SIDE = 384


class PairError(ValueError):
    """An image and its mask(s) that cannot be scored; the message says which file and why."""


def mask_index(folder: Path) -> dict[str, list[Path]]:
    """The mask files of ``folder`` (recursively) by stem."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder")
    index: dict[str, list[Path]] = defaultdict(list)
    for path in scan_images(folder):
        index[image_stem(path)].append(Path(path))
    return index


def find_mask(index: dict[str, list[Path]], image: str, suffixes: list[str], folder: Path) -> Path:
    """The one mask in ``index`` named as ``image``'s stem plus one of ``suffixes`` (never the image itself, when
    masks and images share a folder)."""
    stem = image_stem(image)
    found = [p for s in suffixes for p in index.get(stem + s, []) if p != Path(image)]
    if not found:
        names = " or ".join(repr(stem + s) for s in suffixes)
        raise PairError(f"no mask named {names} in {folder}")
    if len(found) > 1:
        raise PairError(f"several masks match it: {', '.join(str(p) for p in found)}")
    return found[0]


def fit(mask: np.ndarray, shape: tuple[int, int], path: Path) -> tuple[np.ndarray, bool]:
    """``mask`` at the image's ``shape``: as it is, or resized (nearest) when only the resolution differs."""
    if mask.shape == shape:
        return mask, False
    (mh, mw), (h, w) = mask.shape, shape
    if abs((mh / mw) / (h / w) - 1.0) > ASPECT_TOLERANCE:
        raise PairError(f"{path}: mask of {mh} x {mw} px does not fit the image's {h} x {w} px")
    values = mask.astype(np.int32) if mask.dtype != np.uint8 else mask
    return np.asarray(Image.fromarray(values).resize((w, h), Image.NEAREST)).astype(mask.dtype), True


def is_mask(path: Path, folders: list[tuple[Path, bool]], suffixes: list[str]) -> bool:
    """Whether a file found under the images' folder is a mask rather than a radiograph: it lies in a mask folder
    that is not also the images' folder (or above it), or it is named with a mask suffix (masks beside their images).

    Args:
        path: the file.
        folders: each mask folder, resolved, and whether the images' folder lies in it.
        suffixes: the mask-name suffixes.
    """
    path = path.resolve()
    for folder, shared in folders:
        if path.is_relative_to(folder) and (not shared or any(s and image_stem(path).endswith(s) for s in suffixes)):
            return True
    return False


def load_pair(image_path: str, masks: list[tuple[dict, Path]], suffixes: list[str]) -> tuple:
    """(image, true label map, mask paths, resized) of one image; raises :class:`PairError` or ``CXRReadError``."""
    paths = [find_mask(index, image_path, suffixes, folder) for index, folder in masks]
    image = read_image(image_path)[0]
    read = [fit(read_labels(p), image.shape, p) for p in paths]
    truth = truth_from_mask(read[0][0]) if len(read) == 1 else truth_from_pair(read[0][0], read[1][0])
    if not truth.any():
        raise PairError(f"{paths[0]}: the mask holds no lung")
    return image, truth, paths, any(r for _, r in read)


def run_published(seg, image: np.ndarray, path: str) -> np.ndarray:
    """The published PBTSeg's map of one film; its failure on a film counts as an empty map (and is said)."""
    try:
        return published_map(seg, image)
    except Exception as e:  # noqa: BLE001 - the published code may fail on any film; the rest is still scored
        print(f"{path}: the published PBTSeg raised {type(e).__name__}: {e}", file=sys.stderr)
        return np.zeros(image.shape, np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of radiographs (searched recursively)")
    parser.add_argument("--masks", type=Path, default=None, help="folder of one lung mask per image")
    parser.add_argument("--right-masks", type=Path, default=None, help="masks of the patient's right lung")
    parser.add_argument("--left-masks", type=Path, default=None, help="masks of the patient's left lung")
    parser.add_argument(
        "--mask-suffix",
        action="append",
        default=None,
        help="a mask's name is the image's stem plus this (repeatable; default: '' and '_mask')",
    )
    parser.add_argument("--reference", type=Path, default=None, help="a clone of the published ART-ASyn code")
    parser.add_argument("--params", type=json.loads, default={}, help="PBTSegParams fields as a JSON object")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images (sorted by path)")
    parser.add_argument("--list-below", type=float, default=None, metavar="DICE", help="list our lungs below DICE")
    parser.add_argument("--picture", type=Path, default=None, help="PNG of the 8 hardest images, outlines drawn")
    parser.add_argument("--csv", type=Path, default=None, help="write every lung's Dice by zone to this CSV")
    args = parser.parse_args()

    fields = set(PBTSegParams.__dataclass_fields__)
    if not isinstance(args.params, dict) or set(args.params) - fields:
        raise SystemExit(f"--params {args.params}: expected a JSON object of PBTSegParams fields")
    if (args.masks is None) == (args.right_masks is None and args.left_masks is None):
        raise SystemExit("give either --masks DIR or both --right-masks DIR and --left-masks DIR")
    if args.masks is None and (args.right_masks is None or args.left_masks is None):
        raise SystemExit("--right-masks and --left-masks go together (one mask per lung)")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit {args.limit}: expected a positive number of images")
    folders = [args.masks] if args.masks is not None else [args.right_masks, args.left_masks]
    masks = [(mask_index(f), f) for f in folders]
    suffixes = args.mask_suffix if args.mask_suffix is not None else ["", "_mask"]
    if not args.images.is_dir():
        raise SystemExit(f"--images {args.images}: not a folder")
    resolved = [(f.resolve(), args.images.resolve().is_relative_to(f.resolve())) for f in folders]
    images = [p for p in scan_images(args.images) if not is_mask(Path(p), resolved, suffixes)]
    images = images[: args.limit] if args.limit else images
    if not images:
        raise SystemExit(f"--images {args.images}: no image files found")
    seg = load_published(args.reference.resolve()) if args.reference else None

    names = ["ours"] + (["published"] if seg else [])
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    swaps, no_map = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    skipped: list[tuple[str, str]] = []
    records: list[list] = []
    cases: list = []
    resized = 0
    for path in tqdm(images, desc="images", unit="img", file=sys.stderr):
        try:
            image, truth, paths, was_resized = load_pair(path, masks, suffixes)
        except (PairError, CXRReadError) as e:
            skipped.append((path, str(e)))
            continue
        resized += was_resized
        maps = {}
        for name in names:
            c0 = time.thread_time()
            maps[name] = pbtseg(image, **args.params)[0] if name == "ours" else run_published(seg, image, path)
            cpu[name].append((time.thread_time() - c0) * 1000.0)
            d = zone_dice(maps[name], truth)
            rows[name].append(d)
            swaps[name] += labels_swapped(maps[name], truth)
            no_map[name] += not maps[name].any()
            records += [[path, name, k] + [f"{x:.4f}" for x in d[k - 1]] for k in (1, 2) if not np.isnan(d[k - 1, 0])]
        if args.picture:  # the hardest films so far, shrunk for the picture (full-size films would fill the memory)
            small, shrunk = fit_tile(image, [truth, maps["ours"], maps.get("published")], PICTURE_SIDE)
            cases.append((float(np.nanmin(rows["ours"][-1][:, 0])), Path(path).name, small, *shrunk))
            cases = sorted(cases, key=lambda c: c[0])[:8]

    print_report(args, images, rows, cpu, swaps, no_map, skipped, resized, records)
    if not rows["ours"]:
        raise SystemExit("no image could be scored (see the list above)")
    if args.csv:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["image", "method", "lung", *ZONES])
        writer.writerows(records)
        write_text_atomic(args.csv, out.getvalue())
        print(f"per-lung Dice: {args.csv}")
    if args.picture:
        save_picture(args.picture, cases, side=PICTURE_SIDE)
        print(f"picture of the hardest images (true green, ours red, published blue): {args.picture}")


def print_report(
    args: argparse.Namespace,
    images: list[str],
    rows: dict[str, list[np.ndarray]],
    cpu: dict[str, list[float]],
    swaps: dict[str, int],
    no_map: dict[str, int],
    skipped: list[tuple[str, str]],
    resized: int,
    records: list[list],
) -> None:
    """The Dice tables, speed and failure counts, and (``--list-below``) our lungs below that Dice."""
    n = len(rows["ours"])
    print(f"PBTSeg on {args.images} against hand-drawn lung masks: {n} of {len(images)} images scored")
    if args.params:
        print(f"our parameters changed: {args.params}")
    if resized:
        print(f"the masks of {resized} images were resized (nearest) to their image's size")
    for name, r in rows.items():
        if not r:
            continue
        shown = "published (" + str(args.reference) + ")" if name == "published" else name
        print(f"\nDice per lung, {shown}: labels swapped in {swaps[name]} images, no lung map in {no_map[name]}")
        print("\n".join(dice_table({"lungs": np.concatenate(r)})))
        print(f"median CPU time per image: {statistics.median(cpu[name]):.1f} ms (one core, images at their size)")
    if args.list_below is not None and n:
        # a record: image, method, lung, then the Dice of each zone (the whole lung first)
        poor = [(float(r[3]), r[0], r[2]) for r in records if r[1] == "ours" and float(r[3]) < args.list_below]
        print(f"\nour lungs with whole-lung Dice below {args.list_below:g} ({len(poor)}):")
        for d, path, k in sorted(poor):
            print(f"  {path}  lung {k}  Dice {d:.3f}")
    if skipped:
        print(f"\nnot scored ({len(skipped)}):")
        for path, why in skipped:
            print(f"  {path}: {why}")


if __name__ == "__main__":
    main()
