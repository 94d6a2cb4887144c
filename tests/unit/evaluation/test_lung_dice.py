"""Lung-map scoring (per-lung Dice by zone, true maps from hand-drawn masks) and the benchmark that scores PBTSeg
against such masks, ``benchmarks/bench_pbtseg_masks.py``, run as a user runs it."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data.phantoms import make_phantom
from bundle.evaluation.lung_dice import dice_table, labels_swapped, truth_from_mask, truth_from_pair, zone_dice
from bundle.io import read_image
from bundle.lungs.pbtseg import pbtseg

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "bench_pbtseg_masks.py"


def test_zone_dice_by_hand():
    truth = np.zeros((12, 10), np.uint8)
    truth[0:6, 1:3] = 1  # lung 1: rows 0-5, thirds of two rows each
    truth[0:9, 6:8] = 2  # lung 2: rows 0-8, thirds of three rows each
    labels = truth.copy()
    labels[4:6] = 0  # lung 1 loses its lower third, lung 2 two of its middle rows
    labels[9:12, 6:8] = 2  # lung 2 runs three rows past its bottom (outside every third)
    d = zone_dice(labels, truth)
    assert d.shape == (2, 4)
    np.testing.assert_allclose(d[0], [2 * 8 / (8 + 12), 1.0, 1.0, 0.0])
    np.testing.assert_allclose(d[1], [2 * 14 / (20 + 18), 1.0, 2 * 2 / (2 + 6), 1.0])


def test_zone_dice_lung_missing_from_truth_and_shape_mismatch():
    truth = np.zeros((8, 8), np.uint8)
    truth[1:7, 1:3] = 1
    d = zone_dice(truth, truth)
    np.testing.assert_allclose(d[0], 1.0)
    assert np.isnan(d[1]).all()
    with pytest.raises(ValueError, match="differ in shape"):
        zone_dice(truth, truth[:4])


def test_labels_swapped():
    truth = np.zeros((8, 8), np.uint8)
    truth[1:7, 1:3], truth[1:7, 5:7] = 1, 2
    assert not labels_swapped(truth, truth)
    assert labels_swapped(np.where(truth > 0, 3 - truth, 0).astype(np.uint8), truth)


def test_dice_table_counts_and_skips_missing_lungs():
    rows = np.array([[0.9, 0.8, 0.95, 0.7], [0.8, 0.6, 0.9, 0.5], [np.nan] * 4])
    lines = dice_table({"healthy": rows, "diseased": rows[:1]})
    text = "\n".join(lines)
    assert "healthy    median    0.850   0.700   0.925   0.600" in text
    assert "healthy    worst     0.800   0.600   0.900   0.500" in text
    assert lines[-1] == "lungs with whole-lung Dice below 0.85: healthy 1 of 2, diseased 0 of 1"
    assert dice_table({"lungs": rows})[-1] == "lungs with whole-lung Dice below 0.85: 1 of 2"


def test_truth_from_binary_mask_splits_by_side():
    mask = np.zeros((10, 20), np.uint8)
    mask[2:8, 2:6] = 255  # the image's left lung
    mask[2:8, 12:17] = 255
    mask[0, 15] = 255  # a stray piece, on the right by its centroid (8-connected pieces only)
    truth = truth_from_mask(mask)
    assert (truth[2:8, 2:6] == 1).all() and (truth[2:8, 12:17] == 2).all() and truth[0, 15] == 2
    # lungs drawn touching: one piece, cut at the middle column
    mask[4, 6:12] = 255
    truth = truth_from_mask(mask)
    assert (truth[4, 6:10] == 1).all() and (truth[4, 10:12] == 2).all()
    # a 0/1 mask holding one value is a binary mask too, not a label map with lung 1 only
    one = np.zeros((10, 20), np.uint8)
    one[2:8, 12:17] = 1
    assert (truth_from_mask(one)[2:8, 12:17] == 2).all()


def test_truth_from_label_map_and_pair():
    labels = np.zeros((10, 20), np.uint8)
    labels[2:8, 2:6], labels[2:8, 12:17] = 1, 2
    np.testing.assert_array_equal(truth_from_mask(labels), labels)
    left, right = labels == 1, labels == 2
    np.testing.assert_array_equal(truth_from_pair(left * 255, right * 255), labels)
    with pytest.raises(ValueError, match="differ in shape"):
        truth_from_pair(left, right[:5])


def _montgomery_like(root: Path) -> dict[str, np.ndarray]:
    """Phantoms stored as the Montgomery set is: CXR_png/ plus ManualMask/{right,left}Mask/ (patient's sides), with
    a mask at half resolution, an unreadable image, an image without masks and a mask of the wrong shape."""
    images, right, left = root / "CXR_png", root / "ManualMask" / "rightMask", root / "ManualMask" / "leftMask"
    for folder in (images, right, left):
        folder.mkdir(parents=True)
    truths = {}
    for name, size, seed, diseased in (("MC_0", 256, 1, False), ("MC_1", 320, 2, True), ("MC_2", 256, 5, False)):
        ph = make_phantom(size, seed=seed, diseased=diseased)
        Image.fromarray(np.rint(ph.image * 255).astype(np.uint8)).save(images / f"{name}.png")
        for folder, k in ((right, 1), (left, 2)):
            m = Image.fromarray(((ph.lung == k) * 255).astype(np.uint8))
            (m.resize((size // 2, size // 2), Image.NEAREST) if name == "MC_2" else m).save(folder / f"{name}.png")
        truths[name] = ph.lung
    (images / "broken.png").write_bytes(b"not a png")
    for folder in (right, left):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "broken.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(images / "unmasked.png")
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(images / "wide.png")
    for folder in (right, left):
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(folder / "wide.png")
    return truths


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_bench_on_montgomery_layout_scores_good_pairs_and_reports_bad_ones(tmp_path):
    truths = _montgomery_like(tmp_path)
    out = tmp_path / "dice.csv"
    masks = [
        "--right-masks",
        str(tmp_path / "ManualMask/rightMask"),
        "--left-masks",
        str(tmp_path / "ManualMask/leftMask"),
    ]
    run = _run("--images", str(tmp_path / "CXR_png"), *masks, "--csv", str(out), "--picture", str(tmp_path / "p.png"))
    assert run.returncode == 0, run.stderr
    assert "3 of 6 images scored" in run.stdout
    assert "the masks of 1 images were resized" in run.stdout
    assert "not scored (3):" in run.stdout
    assert "broken.png: " in run.stdout and "unmasked.png: no mask named 'unmasked'" in run.stdout
    assert "wide.png: mask of 64 x 64 px does not fit the image's 64 x 80 px" in run.stdout
    # the CSV holds our PBTSeg's Dice on each lung, as computed here from the same files
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for row in rows:
        name = Path(row["image"]).stem
        image = read_image(tmp_path / "CXR_png" / f"{name}.png")[0]
        truth = truths[name]
        if name == "MC_2":  # the half-resolution masks as stored, back at full resolution (nearest: each pixel 2x2)
            half = [
                np.asarray(Image.open(tmp_path / "ManualMask" / f"{s}Mask" / "MC_2.png")) for s in ("right", "left")
            ]
            truth = np.where(half[0] > 0, 1, np.where(half[1] > 0, 2, 0)).repeat(2, 0).repeat(2, 1)
        expected = zone_dice(pbtseg(image)[0], truth)[int(row["lung"]) - 1]
        np.testing.assert_allclose([float(row[z]) for z in ("whole", "upper", "middle", "lower")], expected, atol=1e-4)
    assert Image.open(tmp_path / "p.png").size == (4 * 384, 384)


def test_bench_with_one_mask_per_image_and_bad_options(tmp_path):
    _montgomery_like(tmp_path)
    both = tmp_path / "mask"
    both.mkdir()
    for name in ("MC_0", "MC_1"):
        right = np.asarray(Image.open(tmp_path / "ManualMask/rightMask" / f"{name}.png"))
        left = np.asarray(Image.open(tmp_path / "ManualMask/leftMask" / f"{name}.png"))
        Image.fromarray(np.maximum(right, left)).save(both / f"{name}_mask.png")  # Shenzhen's naming, both lungs
    run = _run("--images", str(tmp_path / "CXR_png"), "--masks", str(both), "--limit", "3", "--list-below", "1.01")
    assert run.returncode == 0, run.stderr
    assert "2 of 3 images scored" in run.stdout
    assert "our lungs with whole-lung Dice below 1.01 (4):" in run.stdout
    # masks beside their images, in one folder: the masks are not taken for images, nor an image for its own mask
    for name in ("MC_0", "MC_1"):
        (both / f"{name}.png").write_bytes((tmp_path / "CXR_png" / f"{name}.png").read_bytes())
    run = _run("--images", str(both), "--masks", str(both))
    assert run.returncode == 0, run.stderr
    assert "2 of 2 images scored" in run.stdout


def _main_exits(monkeypatch, *args: str) -> str:
    """Run the benchmark's ``main`` in this process (the option checks; a subprocess pays seconds of imports)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        # the script pins these for its timings: restored after the test, so later tests' subprocesses keep theirs
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)
    spec = importlib.util.spec_from_file_location("bench_pbtseg_masks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    return str(exit_info.value.code)


def test_bench_refuses_bad_options_and_nothing_to_score(tmp_path, monkeypatch):
    _montgomery_like(tmp_path)
    images, right = str(tmp_path / "CXR_png"), str(tmp_path / "ManualMask/rightMask")
    empty = tmp_path / "nomasks"
    empty.mkdir()
    assert "no image could be scored" in _main_exits(monkeypatch, "--images", images, "--masks", str(empty))
    assert "go together" in _main_exits(monkeypatch, "--images", images, "--right-masks", right)
    assert "either --masks DIR or both" in _main_exits(monkeypatch, "--images", images)
    assert "no PBTSeg.py there" in _main_exits(
        monkeypatch, "--images", images, "--masks", right, "--reference", str(tmp_path)
    )
    assert "expected a JSON object of PBTSegParams" in _main_exits(
        monkeypatch, "--images", images, "--masks", right, "--params", '{"no_such_field": 1}'
    )
