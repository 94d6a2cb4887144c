"""Datasets: synthetic chest X-ray phantoms, the embedded demo dataset, datalists.

Names are imported on first use (so ``python -m bundle.data.demo`` and friends run their module once).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Phantom": "phantoms",
    "make_phantom": "phantoms",
    "phantom_montage": "phantoms",
    "write_demo_dataset": "demo",
    "demo_dataset_dir": "demo",
    "DatalistError": "datalist",
    "DatalistWarning": "datalist",
    "datalist_from_json": "datalist",
    "build_datalist": "datalist",
    "datalist_from_folders": "datalist",
    "datalist_from_csv": "datalist",
    "scan_images": "datalist",
    "split_train_val": "datalist",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
