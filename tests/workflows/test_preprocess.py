"""The offline runner and the `lungs` job: real `monai.bundle run` and `torchrun` processes on a demo dataset."""

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
from bundle.options import as_bool
from bundle.preprocess.runner import WorkItem, run_offline_job, shard

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "preprocess.json")


# ---- the runner on its own ----------------------------------------------------------------------------------


def square_job(item: WorkItem) -> dict:
    """Toy job: a text file holding the square of the number in the source file; 'bad' sources fail."""
    value = int(Path(item.source).read_text())
    Path(item.outputs[0]).write_text(str(value * value))
    return {"flags": ["big"] if value > 5 else []}


def text_valid(path: str) -> bool:
    return Path(path).read_text().strip().isdigit()


def test_runner_resumes_reports_failures_and_shards(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    items = []
    for i in range(10):
        (src / f"{i}.txt").write_text("oops" if i == 3 else str(i))
        items.append(WorkItem(str(src / f"{i}.txt"), (str(out / f"{i}.sq"),)))
    out.mkdir()
    summary = run_offline_job("sq", items, square_job, out, num_workers=2, is_valid=text_valid, progress=False)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (9, 1, 0)
    assert summary["failures"][0][0].endswith("3.txt") and "ValueError" in summary["failures"][0][1]
    assert summary["flags"] == {"big": 4}
    assert (out / "7.sq").read_text() == "49"
    # damage one output: only it is redone; flags of skipped items are carried over from the last report
    (out / "8.sq").write_text("")
    before = (out / "1.sq").stat().st_mtime_ns
    summary = run_offline_job("sq", items, square_job, out, num_workers=0, is_valid=text_valid, progress=False)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, 8, 1)
    assert summary["flags"] == {"big": 4} and (out / "8.sq").read_text() == "64"
    assert (out / "1.sq").stat().st_mtime_ns == before
    report = json.loads((out / "sq_report.json").read_text())
    assert [r["status"] for r in report["records"] if r["source"].endswith("8.txt")] == ["done"]
    assert "source,status,reason,flags" in (out / "sq_report.csv").read_text()
    # shards are disjoint and complete
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(i.source for p in parts for i in p) == sorted(i.source for i in items)
    assert as_bool("true") and not as_bool("False") and as_bool(1)
    with pytest.raises(ValueError):
        as_bool("maybe")


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
    proc = _run([sys.executable, "-m", "monai.bundle", "run", "lungs", "--config_file", CONFIG,
                 "--dataset_dir", str(root), "--num_workers", "2"])
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
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
          "run", "lungs", "--config_file", CONFIG, "--dataset_dir", str(root), "--output_dir", str(out),
          "--include_test", "true", "--num_workers", "0", "--progress", "false"], timeout=300)
    expected = {str(p) for p in root.rglob("*") if p.is_file() and p.parts[len(root.parts)] in ("train", "test")
                and not p.name.startswith(".") and p.suffix in (".png", ".dcm")}
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
