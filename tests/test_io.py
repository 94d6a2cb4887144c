"""Tests for bundle.io: every format standardises to the same (H, W) float32 [0, 1] picture."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.io import CXRReadError, atomic_write, is_supported, read_image, write_png


def pattern(h: int = 48, w: int = 64) -> np.ndarray:
    """Non-symmetric 8-bit test picture (values k/255 spanning 0..1): gradient, bright 'L', dark square."""
    r, c = np.mgrid[0:h, 0:w]
    k = np.rint(40 + 120 * c / (w - 1) + 40 * r / (h - 1))
    k[4:24, 4:9] = 255
    k[19:24, 4:20] = 255
    k[h - 12 : h - 4, w - 14 : w - 4] = 0
    return (k / 255.0).astype(np.float32)


def test_png_roundtrip(tmp_path):
    img = pattern()
    for bits in (8, 16):
        out, meta = read_image(write_png(tmp_path / f"p{bits}.png", img, bits=bits))
        np.testing.assert_allclose(out, img, atol=1e-6)
        assert out.dtype == np.float32 and meta["format"] == "png"


def test_atomic_write_failure_keeps_old(tmp_path):
    target = tmp_path / "x.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_errors_name_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(CXRReadError, match="empty.png"):
        read_image(empty)
    assert not is_supported(tmp_path / "notes.txt")
