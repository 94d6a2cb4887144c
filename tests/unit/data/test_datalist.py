"""Datalists (folders, CSV, decathlon JSON; every error case); the demo dataset's datalist."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data.datalist import (
    DatalistError,
    DatalistWarning,
    _main,
    build_datalist,
    datalist_from_csv,
    datalist_from_folders,
    datalist_from_json,
    scan_images,
    split_train_val,
)
from bundle.io import write_nifti, write_png
from tests.conftest import DEMO_TEST_PARAMS


def _img(path: Path, shape=(16, 16), value: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        write_nifti(path, np.full(shape, value, np.float32))
    elif path.suffix in (".tif", ".tiff", ".jpg"):
        Image.fromarray(np.full(shape, int(value * 255), np.uint8)).save(path)
    else:
        write_png(path, np.full(shape, value, np.float32))
    return path


def _mask(path: Path, shape=(16, 16)) -> Path:
    m = np.zeros(shape, np.uint8)
    m[4:8, 4:8] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        write_nifti(path, (m > 0).astype(np.uint8))
    else:
        Image.fromarray(m).save(path)
    return path


def _dicom(path: Path, shape=(16, 16)) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = shape[0], shape[1], 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.full(shape, 1000, np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _layout(root: Path, n_train=3, n_healthy=2, n_diseased=2) -> Path:
    for i in range(n_train):
        _img(root / "train" / "healthy" / f"t{i}.png")
    for i in range(n_healthy):
        _img(root / "test" / "healthy" / f"h{i}.png")
    for i in range(n_diseased):
        _img(root / "test" / "diseased" / f"d{i}.png")
        _mask(root / "ground_truth" / "diseased" / f"d{i}.png")
    return root


# ---- datalist from folders -------------------------------------------------------------------------------------


def test_demo_datalist(demo_root):
    d = build_datalist(demo_root)
    p = DEMO_TEST_PARAMS
    assert set(d) == {"training", "validation", "test"} and d["validation"] == []
    assert len(d["training"]) == p["n_train"] and all(e["label"] == 0 for e in d["training"])
    images = [e["image"] for e in d["test"]]
    assert len(images) == len(set(images)) == p["n_test_healthy"] + p["n_test_diseased"]
    on_disk = {str(f) for sub in ("healthy", "diseased") for f in (demo_root / "test" / sub).iterdir()}
    assert set(images) == on_disk and all(os.path.isabs(i) for i in images)
    diseased = [e for e in d["test"] if e["label"] == 1]
    assert len(diseased) == p["n_test_diseased"]
    assert all(Path(e["mask"]).name == Path(e["image"]).name and "ground_truth" in e["mask"] for e in diseased)
    assert all("mask" not in e for e in d["test"] if e["label"] == 0)
    assert build_datalist(demo_root) == d and json.loads(json.dumps(d)) == d


def test_masks_in_both_locations_any_extension(tmp_path):
    root = tmp_path / "ds"
    _img(root / "train" / "healthy" / "t.png")
    for name in ("a.png", "b.dcm.png", "c.jpg", "d.png", "e.png"):
        _img(root / "test" / "diseased" / name)
    _mask(root / "ground_truth" / "a.tif")  # top-level ground_truth/
    _mask(root / "ground_truth" / "diseased" / "b.dcm.png")  # name with dots: stem is "b.dcm"
    _mask(root / "ground_truth" / "diseased" / "c.nii.gz")
    _mask(root / "ground_truth" / "mask_d.png")  # QaTa-COV19 naming
    _dicom(root / "test" / "diseased" / "IM0001", shape=(16, 16))  # DICOM without extension
    _mask(root / "ground_truth" / "diseased" / "IM0001.png")
    _dicom(root / "test" / "diseased" / "f.dcm", shape=(24, 16))
    _mask(root / "ground_truth" / "diseased" / "f.png", shape=(24, 16))
    _img(root / "val" / "healthy" / "v.png")
    with pytest.warns(DatalistWarning, match=r"1 diseased images have no ground-truth mask(.|\n)*e\.png"):
        d = datalist_from_folders(root)
    masks = {Path(e["image"]).name: e.get("mask") for e in d["test"]}
    assert masks["a.png"].endswith("ground_truth/a.tif")
    assert masks["b.dcm.png"].endswith("diseased/b.dcm.png")
    assert masks["c.jpg"].endswith("c.nii.gz")
    assert masks["d.png"].endswith("mask_d.png")
    assert masks["e.png"] is None  # never a default mask
    assert masks["IM0001"].endswith("IM0001.png") and masks["f.dcm"].endswith("f.png")
    with pytest.warns(DatalistWarning, match="e.png"):
        assert len(datalist_from_folders(root, verify=True)["test"]) == 7
    _mask(root / "ground_truth" / "diseased" / "f.png", shape=(16, 24))  # DICOM header says 24 rows x 16 columns
    with pytest.raises(DatalistError, match=r"f.png: mask size 16x24 differs from its image .*f.dcm \(24x16\)"):
        with pytest.warns(DatalistWarning, match="e.png"):
            datalist_from_folders(root)
    assert [Path(e["image"]).name for e in d["validation"]] == ["v.png"]


def test_scan_images_skips_hidden_and_derived(tmp_path):
    root = _layout(tmp_path / "ds")
    _img(root / "lungs" / "train" / "healthy" / "t0.png")
    _img(root / "synthetic" / "x.png")
    _img(root / ".cache" / "y.png")
    _img(root / "train" / "healthy" / ".hidden.png")
    _img(root / "train" / "healthy" / "sub" / "lungs" / "deep.png")  # only the root's lungs/ is derived
    (root / "train" / "healthy" / "notes.txt").write_text("x")
    found = scan_images(root)
    assert found == sorted(found) and all(os.path.isabs(f) for f in found)
    rel = {os.path.relpath(f, root) for f in found}
    assert "train/healthy/sub/lungs/deep.png" in rel
    assert not any(r.startswith(("lungs", "synthetic", ".cache")) or "/." in r or r.endswith(".txt") for r in rel)
    assert scan_images(root / "train" / "healthy", recursive=False) == [str(root / "train" / "healthy" / "t0.png"),
                                                                       str(root / "train" / "healthy" / "t1.png"),
                                                                       str(root / "train" / "healthy" / "t2.png")]
    with pytest.raises(DatalistError, match="not a folder"):
        scan_images(root / "nope")


def test_folder_errors(tmp_path):
    with pytest.raises(DatalistError, match="dataset folder not found"):
        datalist_from_folders(tmp_path / "missing")
    root = tmp_path / "ds"
    _img(root / "test" / "healthy" / "h.png")
    with pytest.raises(DatalistError, match="train/healthy: training folder not found"):
        datalist_from_folders(root)
    assert len(datalist_from_folders(root, require_train=False)["test"]) == 1  # evaluation-only dataset
    (root / "train" / "healthy").mkdir(parents=True)
    with pytest.raises(DatalistError, match="healthy: empty folder"):
        datalist_from_folders(root)
    (root / "train" / "healthy" / "readme.txt").write_text("x")
    with pytest.raises(DatalistError, match=r"no supported images(.|\n)*readme.txt"):
        datalist_from_folders(root)
    with pytest.raises(DatalistError, match="no test images"):
        datalist_from_folders(_layout(tmp_path / "other", n_healthy=0, n_diseased=0), require_test=True)


def test_unsupported_files_warned_and_skipped(tmp_path):
    root = _layout(tmp_path / "ds")
    (root / "train" / "healthy" / "Thumbs.db").write_bytes(b"\0" * 200)
    (root / "train" / "healthy" / "list.csv").write_text("a,b")
    with pytest.warns(DatalistWarning, match=r"2 unsupported files(.|\n)*Thumbs.db(.|\n)*list.csv|list.csv(.|\n)*Thumbs.db"):
        d = datalist_from_folders(root)
    assert len(d["training"]) == 3


def test_unreadable_and_mismatched_files(tmp_path):
    root = _layout(tmp_path / "ds")
    bad = root / "train" / "healthy" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DatalistError, match="broken.png"):
        datalist_from_folders(root)
    bad.unlink()
    # a PNG whose header is fine but whose pixel data are cut off: only verify=True decodes it
    good = (root / "train" / "healthy" / "t0.png").read_bytes()
    big = _img(root / "train" / "healthy" / "t9.png", shape=(64, 64))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(big)
    big.write_bytes(big.read_bytes()[:200])
    assert len(datalist_from_folders(root)["training"]) == 4
    with pytest.raises(DatalistError, match="t9.png"):
        datalist_from_folders(root, verify=True)
    big.write_bytes(good)
    assert len(datalist_from_folders(root, verify=True)["training"]) == 4
    _mask(root / "ground_truth" / "diseased" / "d1.png", shape=(20, 16))
    with pytest.raises(DatalistError, match=r"d1.png: mask size 20x16 differs from its image .*d1.png \(16x16\)"):
        datalist_from_folders(root)
    with pytest.raises(DatalistError, match=r"d1.png: mask size 20x16"):
        datalist_from_folders(root, verify=True)


def test_duplicate_names(tmp_path):
    root = _layout(tmp_path / "ds")
    _img(root / "train" / "healthy" / "t0.tif")
    with pytest.raises(DatalistError, match=r"differ only in their extension(.|\n)*t0.png(.|\n)*t0.tif|t0.tif(.|\n)*t0.png"):
        datalist_from_folders(root)
    (root / "train" / "healthy" / "t0.tif").unlink()
    _mask(root / "ground_truth" / "d0.nii.gz")  # d0 now has a mask in both locations
    with pytest.raises(DatalistError, match=r"ambiguous ground-truth masks(.|\n)*d0.png -> "):
        datalist_from_folders(root)
    (root / "ground_truth" / "d0.nii.gz").unlink()
    _img(root / "test" / "diseased" / "site2" / "d1.png")  # two diseased images would share one mask
    with pytest.raises(DatalistError, match=r"ground_truth/diseased/d1.png <- "):
        datalist_from_folders(root)


def test_unused_masks_warned(tmp_path):
    root = _layout(tmp_path / "ds")
    _mask(root / "ground_truth" / "diseased" / "orphan.png")
    with pytest.warns(DatalistWarning, match="orphan.png"):
        datalist_from_folders(root)


# ---- CSV and JSON ---------------------------------------------------------------------------------------------


def test_csv(tmp_path):
    root = _layout(tmp_path / "ds")
    csv_path = root / "list.csv"
    csv_path.write_text(
        "image,label,mask,split\n"
        "test/diseased/d1.png,diseased,ground_truth/diseased/d1.png,\n"
        "test/healthy/h0.png,0,,test\n"
        "train/healthy/t0.png,healthy,,train\n"
        "train/healthy/t1.png,0,,val\n"
        f"{root / 'test' / 'diseased' / 'd0.png'},1,,\n"
    )
    with pytest.warns(DatalistWarning, match=r"1 diseased images have no ground-truth mask(.|\n)*d0.png"):
        d = build_datalist(csv_path)
    assert [Path(e["image"]).name for e in d["test"]] == ["d0.png", "d1.png", "h0.png"]
    assert [e["label"] for e in d["test"]] == [1, 1, 0]
    assert d["test"][1]["mask"] == str(root / "ground_truth" / "diseased" / "d1.png") and "mask" not in d["test"][0]
    assert [Path(e["image"]).name for e in d["training"]] == ["t0.png"]
    assert [Path(e["image"]).name for e in d["validation"]] == ["t1.png"]
    simple = tmp_path / "simple.csv"  # no split column: everything is test data
    simple.write_text(f"image,label\n{root}/test/healthy/h0.png,0\n")
    assert datalist_from_csv(simple)["test"] == [{"image": str(root / "test" / "healthy" / "h0.png"), "label": 0}]


@pytest.mark.parametrize(
    "body, match",
    [
        ("test/healthy/h0.png,0\n", "header row"),
        ("image,label\ntest/healthy/h0.png,sick\n", "line 2: label 'sick'"),
        ("image,label\ntest/healthy/h0.png,0\ntest/healthy/h0.png,0\n", "listed twice"),
        ("image,label\ntest/healthy/nope.png,0\n", r"missing(.|\n)*nope.png \(line 2\)"),
        ("image,label\nlist.csv,0\n", r"unsupported(.|\n)*list.csv"),
        ("image,label,split\ntest/diseased/d0.png,1,train\n", "training images must be healthy"),
        ("image,label,split\ntest/healthy/h0.png,0,holdout\n", "split 'holdout'"),
        ("image,label\n", "no rows"),
        ("image,label,mask\ntest/diseased/d0.png,1,test/healthy/h0.png\n", "differs"),
    ],
)
def test_csv_errors(tmp_path, body, match):
    root = _layout(tmp_path / "ds")
    _img(root / "test" / "healthy" / "h0.png", shape=(16, 12))
    (root / "list.csv").write_text(body)
    with pytest.raises(DatalistError, match=match):
        datalist_from_csv(root / "list.csv")


def test_json_passthrough(tmp_path):
    root = _layout(tmp_path / "ds")
    content = {
        "name": "mine",
        "training": [{"image": "train/healthy/t0.png", "label": 0}],
        "test": [{"image": "test/diseased/d0.png", "label": "diseased", "mask": "ground_truth/diseased/d0.png"}],
    }
    (root / "datalist.json").write_text(json.dumps(content))
    d = build_datalist(root / "datalist.json")
    assert d["training"] == [{"image": str(root / "train" / "healthy" / "t0.png"), "label": 0}]
    assert d["test"] == [{"image": str(root / "test" / "diseased" / "d0.png"), "label": 1,
                          "mask": str(root / "ground_truth" / "diseased" / "d0.png")}]
    assert d["validation"] == []
    content["test"][0]["mask"] = "ground_truth/diseased/gone.png"
    (root / "datalist.json").write_text(json.dumps(content))
    with pytest.raises(DatalistError, match="gone.png"):
        datalist_from_json(root / "datalist.json")
    with pytest.raises(DatalistError, match="expected a dataset folder"):
        build_datalist(_img(root / "x.tif"))
    with pytest.raises(DatalistError, match="no such dataset"):
        build_datalist(root / "nothing.csv")


# ---- split and command line -----------------------------------------------------------------------------------


def test_split_train_val():
    entries = [{"image": f"/d/{i:03d}.png", "label": 0} for i in range(50)]
    train, val = split_train_val(entries, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert sorted(e["image"] for e in train + val) == [e["image"] for e in entries]
    assert train == sorted(train, key=lambda e: e["image"]) and val == sorted(val, key=lambda e: e["image"])
    assert split_train_val(list(reversed(entries)), 0.2, seed=3) == (train, val)  # input order is irrelevant
    assert split_train_val(entries, 0.2, seed=4)[1] != val
    assert len(split_train_val(entries[:3], 0.01)[1]) == 1 and split_train_val(entries, 0.0)[1] == []
    with pytest.raises(ValueError):
        split_train_val(entries, 1.0)


def test_command_line(tmp_path):
    root = _layout(tmp_path / "ds", n_train=10)
    out = tmp_path / "out" / "datalist.json"
    message = _main(str(root), output=str(out), val_fraction=0.2, seed=0)
    d = json.loads(out.read_text())
    assert (len(d["training"]), len(d["validation"]), len(d["test"])) == (8, 2, 4)
    assert "training: 8" in message and "2 test masks" in message
    assert out.read_text().startswith('{\n    "training"')  # 4-space indent
