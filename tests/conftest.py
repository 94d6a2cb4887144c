"""Shared test fixtures: synthetic chest X-ray phantoms and a small demo dataset in the published layout.

- ``phantom``: factory ``phantom(size=128, seed=0, diseased=False, **kwargs) -> Phantom`` (fresh copies of
  cached phantoms, so tests may modify them).
- ``demo_root``: ``Path`` of a small demo dataset written once per test session (8 train, 4 test healthy,
  4 test diseased with masks, 128 x 128). Shared: treat it as read-only.
- ``demo_copy``: a private, writable copy of ``demo_root`` in the test's ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import pytest

from bundle.data.demo import write_demo_dataset
from bundle.data.phantoms import Phantom, make_phantom

DEMO_TEST_PARAMS = {"n_train": 8, "n_test_healthy": 4, "n_test_diseased": 4, "size": 128, "seed": 0}


@functools.lru_cache(maxsize=64)
def _cached_phantom(size, seed: int, diseased: bool, kwargs: tuple) -> Phantom:
    return make_phantom(size, seed=seed, diseased=diseased, **dict(kwargs))


@pytest.fixture
def phantom():
    """Factory: ``phantom(size=128, seed=0, diseased=False, **kwargs)`` -> a fresh copy of a cached Phantom."""

    def make(size=128, seed: int = 0, diseased: bool = False, **kwargs) -> Phantom:
        size = tuple(size) if isinstance(size, (list, tuple)) else size
        p = _cached_phantom(size, seed, diseased, tuple(sorted(kwargs.items())))
        return dataclasses.replace(p, image=p.image.copy(), lung=p.lung.copy(), lesion=p.lesion.copy())

    return make


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset in the published layout, written once per session (read-only for tests)."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo_session") / "demo", **DEMO_TEST_PARAMS)


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the session demo dataset."""
    return Path(shutil.copytree(demo_root, tmp_path / "demo"))
