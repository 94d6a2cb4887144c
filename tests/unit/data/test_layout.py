"""The dataset layout (bundle/data/layout.py): image stems, derived-file paths and offline-variant paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundle.data.layout import derived_path, image_stem, variant_paths


@pytest.mark.parametrize(
    "name, stem",
    [
        ("a.png", "a"),
        ("a.nii.gz", "a"),  # the two-part suffix goes as a whole, not just ".gz"
        ("scan.NII.GZ", "scan"),  # suffixes match whatever their case
        ("a.nii", "a"),
        ("x.jpeg", "x"),
        ("b.dcm.png", "b.dcm"),  # only the last image suffix is removed
        ("1.2.840.113619.2.5", "1.2.840.113619.2.5"),  # DICOM named by its UID: the dots are not a suffix
        ("IM0001", "IM0001"),  # DICOM without an extension
        ("notes.txt", "notes.txt"),  # not an image suffix
        (".png", ".png"),  # a bare suffix is a (hidden) name, never an empty stem
        ("folder/sub/c.tiff", "c"),  # the folder is dropped
    ],
)
def test_image_stem(name, stem):
    assert image_stem(name) == stem
    assert image_stem(Path(name)) == stem


def test_derived_path_keeps_the_relative_folder(tmp_path):
    root = tmp_path / "ds"
    image = root / "train" / "healthy" / "site2" / "c.nii.gz"
    assert derived_path(image, root, root / "lungs") == root / "lungs" / "train" / "healthy" / "site2" / "c.png"
    assert derived_path(image, root, tmp_path / "cache", suffix="") == tmp_path / "cache" / "train" / "healthy" / "site2" / "c"
    uid = root / "test" / "1.2.840.5"
    assert derived_path(uid, root, root / "lungs") == root / "lungs" / "test" / "1.2.840.5.png"


def test_derived_path_resolves_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = derived_path("ds/train/healthy/a.png", tmp_path / "ds", "lungs")
    assert out == Path("lungs") / "train" / "healthy" / "a.png"


@pytest.mark.parametrize("image", ["other/train/a.png", "ds_sibling/a.png", "a.png"])
def test_derived_path_outside_the_dataset_is_an_error(tmp_path, image):
    with pytest.raises(ValueError, match="not inside the dataset folder"):
        derived_path(tmp_path / image, tmp_path / "ds", tmp_path / "ds" / "lungs")


def test_variant_paths(tmp_path):
    root = tmp_path / "ds"
    image, mask = variant_paths(root / "train" / "healthy" / "b.dcm.png", root, root / "synthetic", 2)
    assert image == root / "synthetic" / "train" / "healthy" / "b.dcm_v2.png"
    assert mask == root / "synthetic" / "train" / "healthy" / "b.dcm_v2_mask.png"
    image, mask = variant_paths(root / "train" / "1.2.3", root, root / "synthetic", 1)
    assert (image.name, mask.name) == ("1.2.3_v1.png", "1.2.3_v1_mask.png")
    with pytest.raises(ValueError, match="not inside"):
        variant_paths(tmp_path / "elsewhere.png", root, root / "synthetic", 1)
