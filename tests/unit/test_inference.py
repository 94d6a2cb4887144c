"""Inference helpers (bundle/inference.py): which files a folder run picks up and the output names it gives them."""

from __future__ import annotations

import os

import pytest


def test_inference_datalist_scan_rules(tmp_path):
    from bundle.inference import inference_datalist, output_stems

    root = tmp_path / "data"
    for rel in ("a/x.png", "a/b/y.dcm", "lungs/a/x.png", "ground_truth/x.png", "out/x_mask.png", ".hidden/z.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "datalist.json").write_text("{}")
    (root / "a" / "notes.bmp").write_bytes(b"x")
    files = [d["image"] for d in inference_datalist(root, exclude=[root / "out"])]
    assert sorted(os.path.relpath(f, root) for f in files) == ["a/b/y.dcm", "a/notes.bmp", "a/x.png"]
    assert inference_datalist(root / "a" / "x.png") == [{"image": str(root / "a" / "x.png")}]
    with pytest.raises(ValueError, match="must not be the input folder"):
        inference_datalist(root, exclude=[root])
    with pytest.raises(FileNotFoundError):
        inference_datalist(root / "missing")
    stems = output_stems([str(root / "a/x.png"), str(root / "a/x.dcm"), str(root / "a/b/y.nii.gz")], root)
    assert stems == {
        str(root / "a/x.png"): "a/x_png",
        str(root / "a/x.dcm"): "a/x_dcm",
        str(root / "a/b/y.nii.gz"): "a/b/y",
    }
