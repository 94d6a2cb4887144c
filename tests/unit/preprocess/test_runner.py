"""The offline job runner (bundle/preprocess/runner.py) on its own: resume, failure report, shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundle.options import as_bool
from bundle.preprocess.runner import WorkItem, run_offline_job, shard


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
