"""The offline jobs through real `monai.bundle run` and `torchrun` processes: the `lungs` job on a demo dataset and
the `synthesize` job (anomaly variants)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.io import LoadCXRd, read_image, read_labels, write_png
from bundle.lungs.cache import lung_cache_path
from bundle.lungs.pbtseg import pbtseg
from bundle.lungs.transforms import PBTSegd

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "preprocess.json")


# ---- the lungs job through monai.bundle and torchrun ----------------------------------------------------------


def _add_bad_files(root: Path) -> list[Path]:
    bad = [root / "train" / "healthy" / "zz_corrupt.png", root / "train" / "healthy" / "zz_truncated.dcm"]
    bad[0].write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    bad[1].write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x00")  # header cut short
    return bad


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _train_images(root: Path) -> list[Path]:
    return sorted(p for p in (root / "train").rglob("*") if p.is_file() and not p.name.startswith(("zz_", "blank")))


def test_lungs_job_bundle_run_resume_and_cache(demo_copy: Path):
    root = demo_copy
    bad = _add_bad_files(root)
    blank = root / "train" / "healthy" / "blank.png"  # a valid image without lungs: done, flagged, empty map
    write_png(blank, np.full((96, 96), 0.5, np.float32))
    proc = _run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "lungs",
            "--config_file",
            CONFIG,
            "--dataset_dir",
            str(root),
            "--num_workers",
            "2",
        ]
    )
    lungs = root / "lungs"
    report = json.loads((lungs / "lungs_report.json").read_text())
    status = {r["source"]: r for r in report["records"]}
    images = _train_images(root)
    assert len(status) == len(images) + len(bad) + 1  # training images only by default
    for b in bad:
        assert status[str(b)]["status"] == "failed" and b.name in status[str(b)]["reason"]
    assert status[str(blank)]["flags"] == ["no lung"] and not read_labels(lung_cache_path(blank, root, lungs)).any()
    assert "no lung" in (lungs / "lungs_report.csv").read_text()
    assert (lungs / "lungs_no_lung.txt").read_text().splitlines() == [str(blank)]
    for img in images:
        assert status[str(img)]["status"] == "done"
        out = lung_cache_path(img, root, lungs)
        assert out.is_file() and out.parent.name == img.parent.name
    # the cached map is exactly what PBTSeg gives on the image as loaded
    first = images[0]
    np.testing.assert_array_equal(read_labels(lung_cache_path(first, root, lungs)), pbtseg(read_image(first)[0])[0])
    assert (lungs / "lungs_qa.png").is_file() and (lungs / "lungs_report.csv").is_file()
    assert not list(root.rglob("*.tmp*")), "temporary files left behind"
    assert "failed" in proc.stderr + proc.stdout

    # resume: in-process monai.bundle run of the same job: nothing recomputed, files untouched
    stamps = {p: p.stat().st_mtime_ns for p in lungs.rglob("*.png") if p.name != "lungs_qa.png"}
    from monai.bundle import run

    run("lungs", config_file=CONFIG, dataset_dir=str(root), num_workers=0, progress=False)
    report = json.loads((lungs / "lungs_report.json").read_text())
    assert report["summary"]["done"] == 0 and report["summary"]["skipped"] == len(images) + 1
    assert report["summary"]["flags"].get("no lung") == 1  # carried over from the first run
    assert report["summary"]["failed"] == len(bad)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # online PBTSegd and PBTSegd reading the cache give the same maps
    load = LoadCXRd(keys="image")
    online, cached = PBTSegd(), PBTSegd(cache_dir=lungs, dataset_dir=root)
    for img in images[:4]:
        data = load({"image": str(img)})
        a, b = online(data)["lung"], cached(data)["lung"]
        assert a.meta["lung_source"] == "computed" and b.meta["lung_source"] == "cache"
        assert torch.equal(a.as_tensor(), b.as_tensor()) and a.shape == (1, *read_image(img)[0].shape)


@pytest.mark.slow
def test_lungs_job_torchrun_two_ranks(demo_copy: Path, tmp_path: Path):
    root = demo_copy
    _add_bad_files(root)
    out = tmp_path / "maps"
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "monai.bundle",
            "run",
            "lungs",
            "--config_file",
            CONFIG,
            "--dataset_dir",
            str(root),
            "--output_dir",
            str(out),
            "--include_test",
            "true",
            "--num_workers",
            "0",
            "--progress",
            "false",
        ],
        timeout=300,
    )
    expected = {
        str(p)
        for p in root.rglob("*")
        if p.is_file()
        and p.parts[len(root.parts)] in ("train", "test")
        and not p.name.startswith(".")
        and p.suffix in (".png", ".dcm")
    }
    merged = json.loads((out / "lungs_report.json").read_text())
    sources = [r["source"] for r in merged["records"]]
    assert sorted(sources) == sorted(expected) and len(set(sources)) == len(sources)
    per_rank = [json.loads((out / f"lungs_report.rank{r}.json").read_text()) for r in (0, 1)]
    shares = [{r["source"] for r in p["records"]} for p in per_rank]
    assert shares[0] and shares[1] and not shares[0] & shares[1] and shares[0] | shares[1] == expected
    assert merged["summary"]["world_size"] == 2 and merged["summary"]["failed"] == 2
    for r in merged["records"]:
        if r["status"] == "done":
            assert Path(r["outputs"][0]).is_file() and str(out) in r["outputs"][0]
    assert not (root / "lungs").exists()  # --output_dir took over the default location
    shutil.rmtree(out)


# ---- offline variants: `monai.bundle run synthesize` -----------------------------------------------------------


def test_offline_synthesize_job_resume_and_datalist(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from bundle.data.phantoms import make_phantom
    from bundle.io import read_image, read_labels, write_png
    from bundle.lungs.cache import lung_cache_path, write_stamp
    from bundle.preprocess.anomalies import (
        SyntheticAnomalyJob,
        offline_variant_datalist,
        synthesis_items,
    )

    repo = Path(__file__).resolve().parents[2]
    root = tmp_path / "demo"  # published layout; one image in a subfolder, one test image that must be left alone
    for k, rel in enumerate(
        [
            "train/healthy/a.png",
            "train/healthy/b.png",
            "train/healthy/site2/c.png",
            "train/healthy/d.png",
            "test/healthy/t.png",
        ]
    ):
        ph = make_phantom(64, seed=k)
        write_png(root / rel, ph.image, bits=16)
        if k != 3:  # the lung cache has every map but d's: d falls back to PBTSeg
            write_png(lung_cache_path(root / rel, root, root / "lungs"), ph.lung)
    write_stamp(root / "lungs")  # as the `lungs` job does, so that the synthesis job trusts the cache
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "synthesize",
        "--config_file",
        str(repo / "configs/preprocess.json"),
        "--dataset_dir",
        str(root),
        "--num_workers",
        "2",
        "--progress",
        "false",
    ]
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    syn = root / "synthetic"
    report = json.loads((syn / "synthesize_report.json").read_text())
    assert report["summary"]["done"] == 4 and report["summary"]["failed"] == 0
    sources = {Path(r["source"]).name: r["details"]["lung_source"] for r in report["records"]}
    assert sources == {"a.png": "cache", "b.png": "cache", "c.png": "cache", "d.png": "pbtseg"}
    items = synthesis_items(root, syn)
    assert all(1 <= it.extra["variants"] <= 3 for it in items) and len({it.extra["variants"] for it in items}) >= 1
    for it in items:
        healthy, _ = read_image(it.source)
        for k in range(it.extra["variants"]):
            v, m = it.outputs[2 * k], it.outputs[2 * k + 1]
            assert (
                v.endswith(f"_v{k + 1}.png") and m.endswith(f"_v{k + 1}_mask.png") and "/synthetic/train/healthy/" in v
            )
            img, mask = read_image(v)[0], read_labels(m)
            assert set(np.unique(mask)) <= {0, 1} and (mask.any() or it.source.endswith("d.png"))
            assert (img >= healthy - 1e-3).all() and np.abs(img - healthy)[mask == 0].mean() < 0.02
    assert (syn / "synthesize_qa.png").is_file() and (syn / "train/healthy/site2").is_dir()
    assert not list(syn.glob("test/**/*.png")), "only training images get variants"

    # resume: a deleted and a damaged output are redone identically, everything else is skipped
    first = Path(items[0].outputs[0])
    original = first.read_bytes()
    first.unlink()
    Path(items[1].outputs[1]).write_bytes(b"not a png")
    summary = SyntheticAnomalyJob(root, num_workers=0, progress=False).run()
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 2, 0)
    assert first.read_bytes() == original, "a rerun must reproduce the same variant"

    entries = offline_variant_datalist(root)
    assert len(entries) == sum(it.extra["variants"] for it in items)
    assert {e["target"] for e in entries} == {it.source for it in items}
    assert all(e["anomaly_mask"].endswith("_mask.png") and Path(e["image"]).is_file() for e in entries)
    only = offline_variant_datalist(root, images=[{"image": items[0].source}])
    assert {e["target"] for e in only} == {items[0].source}
    with pytest.raises(FileNotFoundError, match="run synthesize|monai.bundle run synthesize"):
        offline_variant_datalist(root, synthetic_dir=tmp_path / "none")
