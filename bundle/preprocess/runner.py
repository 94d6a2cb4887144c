"""A reusable offline job runner: sharded over torchrun ranks, parallel, resumable, atomic, reported.

Used by ``monai.bundle run lungs`` (lung-map cache) and ``monai.bundle run synthesize`` (offline anomalies)
from ``configs/preprocess.json``. A job is a list of :class:`WorkItem` (one input file -> its output files) and a
module-level function ``func(item) -> dict`` that writes the outputs (with :func:`bundle.io.atomic_write` or the
atomic writers built on it, so a file is either complete or absent) and returns details for the report.

- Sharding: with ``RANK``/``WORLD_SIZE`` set (``torchrun`` on one or many machines), rank ``r`` takes
  ``sorted(items)[r::world_size]``: each item is done by exactly one rank, no scheduler needed.
- Parallel: a process pool of ``num_workers`` per rank (0 = in-process), fed in small chunks, with a tqdm bar.
- Resumable: an item whose outputs all exist and pass ``is_valid`` is skipped; a rerun only does what is missing
  or damaged. Flags of skipped items (e.g. "no lung") are carried over from the previous report.
- Errors: an exception in ``func`` fails that item only (its reason goes to the report); good items go on.
- Report: each rank writes ``<report_dir>/<name>_report.rank<r>.json``; when several ranks run, rank 0 gathers
  all records through a gloo process group (works without a shared file system) and writes the merged
  ``<name>_report.json`` and ``<name>_report.csv``; with one rank those are written directly. A summary line is
  logged by every rank and, for the whole job, by rank 0.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist
from PIL import Image
from tqdm.auto import tqdm

from bundle.io import atomic_write

__all__ = [
    "WorkItem",
    "rank_and_world",
    "shard",
    "png_is_valid",
    "run_offline_job",
]

logger = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class WorkItem:
    """One unit of offline work.

    Attributes:
        source: the input file (also the item's identity in reports and sharding).
        outputs: the files the item writes; all must exist and be valid for the item to count as done.
        extra: small picklable per-item settings for the work function (e.g. a seed).
    """

    source: str
    outputs: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from ``torch.distributed`` when initialised, else the torchrun environment."""
    try:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard(items: Sequence[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """This rank's share: items sorted by source, then every ``world_size``-th from ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return sorted(items, key=lambda it: it.source)[rank::world_size]


def png_is_valid(path: str | os.PathLike) -> bool:
    """True when ``path`` is a complete, decodable PNG (header, every chunk CRC, image data)."""
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                return False
            img.load()
        return True
    except Exception:
        return False


def _outputs_valid(item: WorkItem, is_valid: Callable[[str], bool]) -> bool:
    return all(os.path.isfile(p) and is_valid(p) for p in item.outputs)


def _run_chunk(
    func: Callable[[WorkItem], dict | None], items: Sequence[WorkItem], is_valid: Callable[[str], bool], overwrite: bool
) -> list[dict]:
    """Worker side: skip, compute or fail each item; never raises for a bad item."""
    records = []
    for item in items:
        rec: dict[str, Any] = {
            "source": item.source,
            "outputs": list(item.outputs),
            "status": "",
            "reason": "",
            "flags": [],
            "seconds": 0.0,
        }
        t0 = time.perf_counter()
        try:
            if not overwrite and _outputs_valid(item, is_valid):
                rec["status"] = SKIPPED
            else:
                details = func(item) or {}
                missing = [p for p in item.outputs if not (os.path.isfile(p) and is_valid(p))]
                if missing:
                    raise RuntimeError(f"the job function returned without writing valid {missing}")
                rec["status"] = DONE
                rec["flags"] = list(details.pop("flags", []))
                if details:
                    rec["details"] = details
        except Exception as e:  # one bad file must not stop the job: report it
            rec["status"], rec["reason"] = FAILED, f"{type(e).__name__}: {e}"
        rec["seconds"] = round(time.perf_counter() - t0, 4)
        records.append(rec)
    return records


def _pool(num_workers: int) -> cf.ProcessPoolExecutor:
    # fork (as torch's DataLoader on Linux) makes workers start instantly with everything imported
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return cf.ProcessPoolExecutor(num_workers, mp_context=mp.get_context(method))


def _previous_flags(report_dir: Path, name: str) -> dict[str, list[str]]:
    """Flags recorded for each source by earlier runs (merged or per-rank reports), for items skipped now."""
    flags: dict[str, list[str]] = {}
    for path in sorted(report_dir.glob(f"{name}_report*.json")):
        try:
            for rec in json.loads(path.read_text()).get("records", []):
                if rec.get("status") in (DONE, SKIPPED) and rec.get("flags"):
                    flags[rec["source"]] = list(rec["flags"])
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable old report only loses carried-over flags
    return flags


def _write_json(path: Path, payload: dict) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2))


def _write_reports(report_dir: Path, name: str, records: list[dict], summary: dict) -> None:
    records = sorted(records, key=lambda r: r["source"])
    _write_json(report_dir / f"{name}_report.json", {"summary": summary, "records": records})
    with atomic_write(report_dir / f"{name}_report.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["source", "status", "reason", "flags", "outputs", "seconds"])
            for r in records:
                w.writerow(
                    [r["source"], r["status"], r["reason"], ";".join(r["flags"]), ";".join(r["outputs"]), r["seconds"]]
                )


def _summarise(records: Iterable[dict]) -> dict:
    records = list(records)
    out: dict[str, Any] = {"total": len(records)}
    for status in (DONE, SKIPPED, FAILED):
        out[status] = sum(r["status"] == status for r in records)
    flags: dict[str, int] = {}
    for r in records:
        for f in r["flags"]:
            flags[f] = flags.get(f, 0) + 1
    out["flags"] = flags
    return out


def _gather(records: list[dict], rank: int, world: int, timeout_s: float) -> list[dict] | None:
    """All ranks' records on rank 0 (None elsewhere), through the existing or a temporary gloo group."""
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    try:
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(records, gathered, dst=0)
        return [r for part in gathered for r in part] if gathered is not None else None
    finally:
        if own_group:
            dist.destroy_process_group()


def _failed(chunk: Sequence[WorkItem], reason: str) -> list[dict]:
    return [
        {
            "source": it.source,
            "outputs": list(it.outputs),
            "status": FAILED,
            "reason": reason,
            "flags": [],
            "seconds": 0.0,
        }
        for it in chunk
    ]


def _run_in_pool(
    func: Callable[[WorkItem], dict | None],
    chunks: list[list[WorkItem]],
    is_valid: Callable[[str], bool],
    overwrite: bool,
    num_workers: int,
    collect: Callable[[list[dict]], None],
) -> None:
    """Run the chunks in a process pool through a bounded queue; a dead worker fails only its chunks."""
    pending = list(reversed(chunks))
    window = 4 * num_workers  # bounded queue: memory stays flat for 220,000 items
    pool = _pool(num_workers)
    try:
        running: dict[cf.Future, list[WorkItem]] = {}
        while pending or running:
            while pending and len(running) < window:
                chunk = pending.pop()
                running[pool.submit(_run_chunk, func, chunk, is_valid, overwrite)] = chunk
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in finished:
                chunk = running.pop(fut)
                try:
                    collect(fut.result())
                except Exception as e:  # a worker died (e.g. killed for memory): fail its chunk
                    broken = broken or isinstance(e, cf.process.BrokenProcessPool)
                    collect(_failed(chunk, f"worker process failed: {type(e).__name__}: {e}"))
            if broken:  # every chunk still in flight is lost with the pool; a rerun retries them
                for chunk in running.values():
                    collect(_failed(chunk, "worker pool broke while this item was queued"))
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _pool(num_workers)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_offline_job(
    name: str,
    items: Sequence[WorkItem],
    func: Callable[[WorkItem], dict | None],
    report_dir: str | os.PathLike,
    num_workers: int | None = None,
    overwrite: bool = False,
    is_valid: Callable[[str], bool] = png_is_valid,
    chunk_size: int = 4,
    progress: bool = True,
    dist_timeout_s: float = 24 * 3600.0,
    after: Callable[[list[dict]], None] | None = None,
) -> dict:
    """Run ``func`` over this rank's share of ``items`` in parallel, resumably, and report.

    Args:
        name: job name, used for the report files and the progress bar (e.g. ``"lungs"``).
        items: every item of the whole job (all ranks); each rank picks its share with :func:`shard`.
        func: module-level (picklable) function ``func(item) -> dict | None`` writing ``item.outputs``
            atomically; a returned ``"flags"`` list (e.g. ``["no lung"]``) and other entries go to the report.
        report_dir: folder for the report files (created).
        num_workers: worker processes on this rank; ``None`` = CPU count / local ranks; ``0`` = in-process.
        overwrite: recompute items whose outputs are already valid.
        is_valid: check of an existing output file (default: a complete PNG).
        chunk_size: items per pool task (amortises inter-process overhead for small items).
        progress: show a tqdm progress bar.
        dist_timeout_s: how long rank 0 waits for the slowest rank when gathering the reports.
        after: called on rank 0 with all records (sorted by source) once they are merged, e.g. to draw a montage.

    Returns:
        On rank 0 the job summary (``total``, ``done``, ``skipped``, ``failed``, ``flags`` counts, ``failures``
        list of (source, reason), ``report`` path); on other ranks this rank's summary.
    """
    rank, world = rank_and_world()
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    mine = shard(items, rank, world)
    if num_workers is None:
        num_workers = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    num_workers = max(0, min(int(num_workers), len(mine)))
    carried = _previous_flags(report_dir, name)

    bar = tqdm(
        total=len(mine),
        desc=f"{name} [rank {rank}/{world}]" if world > 1 else name,
        position=rank if world > 1 else None,
        disable=not progress,
        unit="img",
        dynamic_ncols=True,
    )
    chunks = [mine[i : i + chunk_size] for i in range(0, len(mine), chunk_size)]
    records: list[dict] = []
    t0 = time.perf_counter()

    def collect(recs: list[dict]) -> None:
        for r in recs:
            if r["status"] == SKIPPED:
                r["flags"] = carried.get(r["source"], [])
        records.extend(recs)
        bar.update(len(recs))

    try:
        if num_workers == 0:
            for chunk in chunks:
                collect(_run_chunk(func, chunk, is_valid, overwrite))
        else:
            _run_in_pool(func, chunks, is_valid, overwrite, num_workers, collect)
    finally:
        bar.close()

    seconds = round(time.perf_counter() - t0, 2)
    own = _summarise(records)
    logger.info(
        "%s rank %d/%d: %d items, %d done, %d skipped, %d failed in %.1f s",
        name,
        rank,
        world,
        own["total"],
        own[DONE],
        own[SKIPPED],
        own[FAILED],
        seconds,
    )
    _write_json(
        report_dir / f"{name}_report.rank{rank}.json",
        {"summary": {**own, "rank": rank, "world_size": world, "seconds": seconds}, "records": records},
    )

    try:
        everything = _gather(records, rank, world, dist_timeout_s) if world > 1 else records
    except Exception as e:  # e.g. RANK/WORLD_SIZE set by hand without MASTER_ADDR: the rank reports still hold it all
        logger.warning(
            "%s: could not gather the ranks' reports (%s: %s); see %s_report.rank*.json in %s",
            name,
            type(e).__name__,
            e,
            name,
            report_dir,
        )
        return own
    if everything is None:
        return own
    everything.sort(key=lambda r: r["source"])
    summary = _summarise(everything)
    summary.update(world_size=world, seconds=seconds, report=str(report_dir / f"{name}_report.json"))
    _write_reports(report_dir, name, everything, summary)
    summary["failures"] = [(r["source"], r["reason"]) for r in everything if r["status"] == FAILED]
    for source, reason in summary["failures"]:
        logger.warning("%s failed for %s: %s", name, source, reason)
    flags = ", ".join(f"{n} {f}" for f, n in summary["flags"].items())
    logger.info(
        "%s finished: %d items, %d done, %d skipped (already valid), %d failed%s; report %s",
        name,
        summary["total"],
        summary[DONE],
        summary[SKIPPED],
        summary[FAILED],
        f", flagged: {flags}" if flags else "",
        summary["report"],
    )
    if after is not None:
        after(everything)
    return summary
