"""configs/inference.json through the real ``python -m monai.bundle run``: every input format, outputs at each
input's own size, batch independence, bad files mixed with good ones, empty folder, reruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.data.phantoms import make_phantom
from bundle.io import read_image, write_nifti
from tests.dicom_files import write_dicom_monochrome1

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "inference.json")
META = str(ROOT / "configs" / "metadata.json")

# input file -> (H, W) of the image as displayed
GOOD = {
    "raster/chest.png": (150, 210),  # 8-bit, non-square, collides with chest.jpg -> names keep the extension
    "raster/chest.jpg": (180, 180),
    "raster/chest16.png": (256, 256),
    "raster/chest.tif": (200, 170),
    "dicom/chest_mono1.dcm": (300, 240),
    "nifti/chest.nii.gz": (160, 200),
}
BAD = {
    "bad/corrupt.png": "not a png",
    "bad/empty.png": "",
    "bad/scan.gif": "unsupported",
    "bad/volume.nii.gz": "3D",
}
MASK_NAMES = {
    "raster/chest.png": "raster/chest_png_mask.png",
    "raster/chest.jpg": "raster/chest_jpg_mask.png",
    "raster/chest16.png": "raster/chest16_mask.png",
    "raster/chest.tif": "raster/chest_tif_mask.png",
    "dicom/chest_mono1.dcm": "dicom/chest_mono1_mask.png",
    "nifti/chest.nii.gz": "nifti/chest_mask.nii.gz",
}


def _write_inputs(root: Path) -> None:
    from PIL import Image

    for rel in list(GOOD) + list(BAD):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    img = lambda rel, seed: make_phantom(GOOD[rel], seed=seed, diseased=seed % 2 == 1).image  # noqa: E731
    Image.fromarray(np.rint(img("raster/chest.png", 1) * 255).astype(np.uint8)).save(root / "raster/chest.png")
    Image.fromarray(np.rint(img("raster/chest.jpg", 2) * 255).astype(np.uint8)).save(
        root / "raster/chest.jpg", quality=95
    )
    Image.fromarray(np.rint(img("raster/chest16.png", 3) * 65535).astype(np.uint16)).save(root / "raster/chest16.png")
    Image.fromarray(np.rint(img("raster/chest.tif", 6) * 65535).astype(np.uint16)).save(root / "raster/chest.tif")
    write_dicom_monochrome1(root / "dicom/chest_mono1.dcm", img("dicom/chest_mono1.dcm", 4))
    write_nifti(root / "nifti/chest.nii.gz", img("nifti/chest.nii.gz", 5))
    (root / "bad/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "bad/empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "bad/scan.gif")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.float32), np.eye(4)), str(root / "bad/volume.nii.gz"))
    (root / "datalist.json").write_text("{}")  # side-car files are ignored by the folder scan


def _run_args(dataset_dir, output_dir, model, threshold, **extra) -> list[str]:
    args = [
        "--config_file",
        CONFIG,
        "--meta_file",
        META,
        "--dataset_dir",
        str(dataset_dir),
        "--output_dir",
        str(output_dir),
        "--ckpt_path",
        str(model),
        "--threshold_path",
        str(threshold),
    ]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    return args


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One real subprocess run over all formats plus bad files, batch size 4."""
    from monai.bundle import ConfigParser

    tmp = tmp_path_factory.mktemp("inference")
    inputs, out = tmp / "inputs", tmp / "out"
    _write_inputs(inputs)
    parser = ConfigParser()
    parser.read_config(CONFIG)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp / "model.pt")
    (tmp / "threshold.json").write_text(json.dumps({"score_threshold": 0.05}))
    cmd = [sys.executable, "-m", "monai.bundle", "run"] + _run_args(
        inputs, out, tmp / "model.pt", tmp / "threshold.json", batch_size=4
    )
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return {"tmp": tmp, "inputs": inputs, "out": out, "proc": proc}


def _mask(path: Path) -> np.ndarray:
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    from PIL import Image

    return np.asarray(Image.open(path))


def test_every_format_restored_to_its_own_size(first_run):
    out, proc = first_run["out"], first_run["proc"]
    assert proc.returncode == 2, proc.stderr[-3000:]  # some files were skipped
    from PIL import Image

    for rel, shape in GOOD.items():
        mask_path = out / MASK_NAMES[rel]
        assert mask_path.is_file(), f"{mask_path} missing; stderr: {proc.stderr[-2000:]}"
        stem = (
            str(mask_path)[: -len("_mask.png")]
            if rel.endswith((".png", ".jpg", ".tif", ".dcm"))
            else str(mask_path)[: -len("_mask.nii.gz")]
        )
        if rel.endswith(".nii.gz"):
            import nibabel as nib

            src, got = nib.load(str(first_run["inputs"] / rel)), nib.load(str(mask_path))
            assert got.shape == src.shape and np.allclose(got.affine, src.affine)
            mask = read_image(mask_path)[0]  # displayed orientation
            error = read_image(stem + "_error.nii.gz", rescale=False)[0]
        else:
            mask = _mask(mask_path)
            assert mask.dtype == np.uint8
            error = np.asarray(Image.open(stem + "_error.tiff"))
            assert error.dtype == np.float32
        assert mask.shape == shape and error.shape == shape, rel
        assert set(np.unique(_mask(mask_path))) <= {0, 1}
        overlay = Image.open(stem + "_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (shape[1], shape[0])


def test_scores_table_and_failures(first_run):
    out = first_run["out"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_inputs"] == len(GOOD) + len(BAD) and scores["num_processed"] == len(GOOD)
    rows = {os.path.relpath(r["file"], first_run["inputs"]): r for r in scores["images"]}
    assert set(rows) == set(GOOD)
    for rel, row in rows.items():
        assert np.isfinite(row["score"]) and row["predicted_label"] == int(row["score"] >= 0.05)
        assert row["lungs_found"] in (0, 1, 2) and (row["height"], row["width"]) == GOOD[rel]
        assert row["mask"] == MASK_NAMES[rel]
    csv_lines = (out / "scores.csv").read_text().splitlines()
    assert csv_lines[0].startswith("file,score,predicted_label,lungs_found") and len(csv_lines) == 1 + len(GOOD)
    failures = {
        os.path.relpath(f["file"], first_run["inputs"]): f["reason"]
        for f in json.loads((out / "failures.json").read_text())
    }
    assert set(failures) == set(BAD)
    assert all(reason for reason in failures.values())
    assert "empty" in failures["bad/empty.png"].lower()
    assert len((out / "failures.csv").read_text().splitlines()) == 1 + len(BAD)
    log = first_run["proc"].stdout + first_run["proc"].stderr
    assert f"{len(GOOD)} of {len(GOOD) + len(BAD)} files processed, {len(BAD)} skipped" in log
    leftovers = [p for p in out.rglob(".*")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_rerun_batch_size_one_same_masks_and_keeps_outputs_of_failed_files(first_run, tmp_path):
    """Batch size 1 gives the same masks as batch size 4 (per-image rule); a file that breaks between runs
    is reported and its earlier outputs stay as they were."""
    import shutil

    from monai.bundle import run

    out = first_run["out"]
    before = {rel: (out / name).read_bytes() for rel, name in MASK_NAMES.items()}
    inputs = Path(shutil.copytree(first_run["inputs"], tmp_path / "inputs"))
    (inputs / "raster/chest16.png").write_bytes(b"broken since the last run")
    tmp = first_run["tmp"]
    argv = _run_args(inputs, out, tmp / "model.pt", tmp / "threshold.json", batch_size=1)
    kwargs = {argv[i][2:]: argv[i + 1] for i in range(0, len(argv), 2)}
    kwargs["batch_size"] = 1
    with pytest.raises(SystemExit) as exit_info:
        run(**kwargs)
    assert exit_info.value.code == 2
    for rel, name in MASK_NAMES.items():
        assert (out / name).read_bytes() == before[rel] or np.array_equal(
            _mask(out / name), _mask_from_bytes(before[rel], name)
        ), rel
    failures = {os.path.relpath(f["file"], inputs) for f in json.loads((out / "failures.json").read_text())}
    assert failures == set(BAD) | {"raster/chest16.png"}


def _mask_from_bytes(data: bytes, name: str) -> np.ndarray:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(name).name
        path.write_bytes(data)
        return _mask(path)


def test_empty_folder_is_a_clear_error(tmp_path):
    from monai.bundle import run

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(Exception) as info:
        run(
            config_file=CONFIG,
            meta_file=META,
            dataset_dir=str(tmp_path / "empty"),
            output_dir=str(tmp_path / "out"),
            ckpt_path=str(tmp_path / "missing.pt"),
        )
    chain, e = [], info.value  # MONAI wraps the error of a config expression; the cause is printed with it
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("no supported images found under" in m and "empty" in m for m in chain), chain
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_inference_config_has_the_standard_ids(first_run):
    """The zoo's inference properties (bundle_root, device, dataset_dir, dataset, evaluator, network_def,
    inferer, preprocessing, postprocessing, output_dir) are all present and resolvable."""
    from monai.bundle import ConfigWorkflow

    tmp = first_run["tmp"]
    workflow = ConfigWorkflow(
        config_file=CONFIG,
        meta_file=META,
        workflow_type="infer",
        dataset_dir=str(first_run["inputs"] / "raster"),
        output_dir=str(tmp / "props"),
        ckpt_path=str(tmp / "model.pt"),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def _inference_lungs(image_path: Path, **overrides) -> np.ndarray:
    """The `lung` map that configs/inference.json's preprocessing gives for one file (before resizing), built the
    way MONAI Label builds it: `dataset_dir` left at its default."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser.update(overrides)
    load, lungs = parser.get_parsed_content("preprocessing").transforms[:2]
    return np.asarray(lungs(load({"image": str(image_path)}))["lung"])[0]


def test_inference_lungs_from_cache_or_online_agree(tmp_path):
    """The lung-cache switch: online by default; with `lung_cache_dir` the cached map is used, and the map the
    `lungs` job would cache equals the online one. Building the preprocessing touches no demo data."""
    from bundle.io import write_png
    from bundle.lungs.cache import lung_cache_path, write_stamp
    from bundle.lungs.pbtseg import pbtseg

    root = tmp_path / "site"
    image_path = root / "test" / "diseased" / "x.png"
    image_path.parent.mkdir(parents=True)
    ph = make_phantom(200, seed=3)
    write_png(image_path, ph.image)
    online = _inference_lungs(image_path, bundle_root=str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()  # no demo dataset written as a side effect
    assert set(np.unique(online)) == {0, 1, 2}

    cached = lung_cache_path(image_path, root, root / "lungs")
    write_png(cached, pbtseg(read_image(image_path)[0])[0])
    write_stamp(root / "lungs")  # as the `lungs` job does: these maps are this PBTSeg's
    np.testing.assert_array_equal(_inference_lungs(image_path, lung_cache_dir=str(root / "lungs")), online)

    swapped = np.where(online > 0, 3 - online, 0).astype(np.uint8)  # a map PBTSeg never makes: proves the read
    write_png(cached, swapped)
    np.testing.assert_array_equal(_inference_lungs(image_path, lung_cache_dir=str(root / "lungs")), swapped)
