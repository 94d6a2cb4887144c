"""Batch jobs that never stop for one bad file: a dataset that skips (and records) items whose transform fails,
and the append-only log of those files. Used by evaluation and inference."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from bundle.io import CXRReadError

__all__ = ["failure_reason", "FailureLog", "SkipFailuresDataset", "new_failure_log", "meta_of"]

logger = logging.getLogger(__name__)


def failure_reason(exc: BaseException) -> str:
    """One-line reason for a failed item: the innermost ``CXRReadError``/original error, not MONAI's wrappers."""
    chain, e = [], exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__

    for e in chain:
        if isinstance(e, CXRReadError):
            return str(e).splitlines()[0]
    inner = chain[-1]
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0] if text else ''}".strip()


class FailureLog:
    """Append-only record of skipped files, safe to share with DataLoader worker processes.

    Each failure is one JSON line appended to ``path`` (single ``write`` of a short line with ``O_APPEND``:
    lines from several processes never interleave).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.count = 0  # failures recorded by this process (workers count in their own copies)

    def record(self, file: str, reason: str) -> None:
        prefix = f"{file}: "
        reason = reason[len(prefix):] if reason.startswith(prefix) else reason  # the file has its own column
        logger.warning(f"skipped {file}: {reason}")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"file": str(file), "reason": reason}) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
        self.count += 1

    def read(self) -> list[dict[str, str]]:
        if not os.path.isfile(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def remove(self) -> None:
        if os.path.isfile(self.path):
            os.remove(self.path)


class SkipFailuresDataset(IterableDataset):
    """Streams transformed items, skipping (and recording) those whose transform fails.

    A file that cannot be read, is not a supported image, is empty or has the wrong shape is recorded in
    ``failures`` with its reason and the stream moves on. With DataLoader workers each worker takes every
    ``num_workers``-th item. Nothing is cached: memory does not depend on the number of items.

    Args:
        data: items ``{"image": path, ...}``.
        transform: the preprocessing applied to each item.
        failures: where skipped files are recorded.
        image_key: key holding the file path (for the failure record).
    """

    def __init__(self, data: Sequence[dict], transform: Any, failures: FailureLog, image_key: str = "image") -> None:
        self.data, self.transform, self.failures, self.image_key = list(data), transform, failures, image_key

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        items = self.data if info is None else self.data[info.id :: info.num_workers]
        for item in items:
            try:
                out = self.transform(dict(item))
            except Exception as e:  # any failure of one file must not stop the others
                self.failures.record(item.get(self.image_key, "?"), failure_reason(e))
                continue
            yield out


def meta_of(x: Any) -> dict:
    """The meta dict of a MetaTensor (empty for anything else)."""
    return dict(getattr(x, "meta", {}) or {})


def new_failure_log(output_dir: str | os.PathLike) -> FailureLog:
    """A fresh :class:`FailureLog` for one run, in a hidden file of ``output_dir`` removed at the end."""
    return FailureLog(Path(output_dir) / f".failures-{uuid.uuid4().hex[:12]}.jsonl")
