"""The demo dataset writer: layout, determinism, reuse, concurrent writers (bundle/data/demo.py)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data.demo import demo_dataset_dir, write_demo_dataset
from tests.conftest import DEMO_TEST_PARAMS


def test_demo_layout(demo_root):
    p = DEMO_TEST_PARAMS
    counts = {sub: len(os.listdir(demo_root / sub)) for sub in ("train/healthy", "test/healthy", "test/diseased")}
    assert counts == {"train/healthy": p["n_train"], "test/healthy": p["n_test_healthy"], "test/diseased": p["n_test_diseased"]}
    assert sorted(os.listdir(demo_root / "ground_truth" / "diseased")) == sorted(os.listdir(demo_root / "test" / "diseased"))
    assert "synthetic" in (demo_root / "README.txt").read_text().lower()
    img = Image.open(next((demo_root / "train" / "healthy").iterdir()))
    assert img.mode == "L" and img.size == (p["size"], p["size"])
    masks = [np.asarray(Image.open(f)) for f in (demo_root / "ground_truth" / "diseased").iterdir()]
    assert all(set(np.unique(m)) == {0, 255} for m in masks)


def test_demo_deterministic_reused_and_protected(tmp_path):
    kw = {"n_train": 2, "n_test_healthy": 1, "n_test_diseased": 2, "size": 48, "seed": 7}
    a, b = write_demo_dataset(tmp_path / "a", **kw), write_demo_dataset(tmp_path / "b", **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) == 9
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    stamp = (a / "demo.json").stat().st_mtime_ns
    assert write_demo_dataset(a, **kw) == a and (a / "demo.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="different parameters"):
        write_demo_dataset(a, **{**kw, "seed": 8})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a demo dataset"):
        write_demo_dataset(tmp_path / "mine", **kw)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user data"
    with pytest.raises(ValueError, match="n_train"):
        write_demo_dataset(tmp_path / "c", n_train=-1)


def _demo_worker(root: str) -> str:
    return str(write_demo_dataset(root, n_train=3, n_test_healthy=1, n_test_diseased=1, size=32, seed=1))


def test_demo_concurrent_writers(tmp_path):
    """Several ranks asking for the dataset at once: one wins, all agree, no temp folders remain."""
    root = str(tmp_path / "demo")
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_demo_worker, [root] * 3)
    assert set(results) == {root}
    assert os.listdir(tmp_path) == ["demo"]
    assert len(os.listdir(tmp_path / "demo" / "train" / "healthy")) == 3


def test_demo_dataset_dir(tmp_path, caplog, monkeypatch):
    import bundle.data.demo as demo

    monkeypatch.setattr(demo, "write_demo_dataset", lambda root: (Path(root).mkdir(parents=True), Path(root))[1])
    with caplog.at_level(logging.INFO, logger="bundle.data.demo"):
        path = demo_dataset_dir(tmp_path)
    assert path == str(tmp_path / "data" / "demo") and os.path.isdir(path)
    assert "synthetic demo data" in caplog.text
