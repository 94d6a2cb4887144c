"""bundle/lungs/cache.py: where a lung map lives in the cache."""

from __future__ import annotations

import pytest

from bundle.lungs.cache import lung_cache_path


def test_lung_cache_path_suffixes(tmp_path):
    assert lung_cache_path(tmp_path / "a/b.nii.gz", tmp_path, tmp_path / "L") == tmp_path / "L/a/b.png"
    assert lung_cache_path(tmp_path / "a/1.2.3", tmp_path, tmp_path / "L") == tmp_path / "L/a/1.2.3.png"
    assert lung_cache_path(tmp_path / "a/c.DCM", tmp_path, tmp_path / "L") == tmp_path / "L/a/c.png"
    assert lung_cache_path(tmp_path / "a/IM0001", tmp_path, tmp_path / "L") == tmp_path / "L/a/IM0001.png"
    with pytest.raises(ValueError, match="not inside"):
        lung_cache_path("/elsewhere/x.png", tmp_path, tmp_path / "L")
