"""The bundle, unchanged, in a real MONAI Label server (monaibundle app) running in its own environment.

The MONAI Label environment is built once by ``scripts/monailabel_env.sh`` (cached; the first build takes
several minutes) and the app is fetched with ``monailabel apps --download --name monaibundle``. The bundle
is copied under the app's ``model/<name>/`` with weights from a one-iteration demo training
(``python -m monai.bundle run training``) and an operating point calibrated by the evaluation workflow;
the server is started on 127.0.0.1 and its results are compared with the bundle's own inference
(``configs/inference.json``) on the same files:

- a local studies folder with PNG, NIfTI and DICOM studies (a MONOCHROME1 CR with a VOI LUT, a MONOCHROME2 DX
  with a window), served with ``MONAI_LABEL_DATASTORE_FILE_EXT`` extended by ``*.dcm``;
- a real PACS: Orthanc with its DICOMweb plugin (Debian packages ``orthanc``, ``orthanc-dicomweb``) holding the
  two DICOM files, MONAI Label started with Orthanc's DICOMweb URL as its studies and
  ``MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI=false`` (the bundle reads the downloaded series folder itself).

Every server runs in its own process group and is stopped through it, also when a test fails.
The DICOM reader is also run under the venv's pydicom 2.4 (``tests/unit/test_io.py`` and a same-array check).
How MONAI Label runs the bundle: docs/monailabel.md.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.data.demo import write_demo_dataset
from bundle.data.phantoms import make_phantom
from bundle.io import read_image, read_labels, write_nifti, write_png
from tests.dicom_files import write_cr_monochrome1_voi_lut, write_dx_monochrome2_window

from .test_zoo import ROOT, build_archive

pytestmark = [pytest.mark.monailabel, pytest.mark.slow, pytest.mark.timeout(2400)]

NAME = build_archive.bundle_name(ROOT)
# (H, W): not 256, not square; the CR and DX are real DICOM Part 10 files written with pydicom
STUDIES = {
    "cxr_wide.png": (300, 240),
    "cxr_nifti.nii.gz": (232, 200),
    "cxr_cr.dcm": (280, 236),
    "cxr_dx.dcm": (236, 290),
}
DICOM_STUDIES = [name for name in STUDIES if name.endswith(".dcm")]
# what MONAI Label's local datastore lists (its default lacks *.dcm and *.jpeg)
STUDY_PATTERNS = ["*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.nii.gz", "*.nii", "*.dcm"]
TIMINGS: dict[str, float] = {}


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def _timed(name: str, start: float) -> None:
    TIMINGS[name] = round(time.monotonic() - start, 1)
    print(f"[monailabel test] {name}: {TIMINGS[name]} s", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 600
) -> tuple[int, bytes]:
    status, _, data = _http_full(method, url, body, headers, timeout)
    return status, data


def _http_full(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 600):
    """(status, response headers, body) of one request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _multipart(field: str, path: Path) -> tuple[bytes, dict]:
    boundary = "artasyn-boundary-7f3a"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a server and every child it started: its own process group (it was started in a new session)."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a server that already exited
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def _server(
    cmd: list[str], cwd: Path, log_path: Path, ready_url: str, what: str, env: dict | None = None, wait_s: float = 300
):
    """Start ``cmd`` in its own process group, wait until ``ready_url`` answers 200, yield (body, log tail);
    the group is stopped on exit, whatever happened."""
    log = open(log_path, "w")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)

    def log_tail() -> str:
        log.flush()
        return log_path.read_text(errors="replace")[-6000:]

    try:
        body = None
        while time.monotonic() - start < wait_s:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}:\n{log_tail()}")
            try:
                status, reply = _http("GET", ready_url, timeout=10)
                if status == 200:
                    body = reply
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        assert body is not None, f"{what} not ready after {wait_s} s:\n{log_tail()}"
        _timed(f"{what} start", start)
        yield body, log_tail
    finally:
        _stop_group(proc)
        log.close()


def _parse_infer(status: int, headers, body: bytes, log) -> tuple[dict, str, bytes]:
    """MONAI Label's /infer answer with output=all (multipart): (result JSON, result file name, file bytes)."""
    assert status == 200, f"/infer failed ({status}): {body[:2000]!r}\n{log()}"
    message = email.message_from_bytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    assert set(parts) == {"params", "image"}, f"unexpected /infer parts {sorted(parts)}"
    params = json.loads(parts["params"].get_content())
    return params, parts["image"].get_filename(), parts["image"].get_payload(decode=True)


def _ml_env(ml_python: Path, **settings: str) -> dict:
    """Environment of a MONAI Label server: the venv's tools (dcmqi's itkimage2segimage) first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{ml_python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env


def _ml_command(ml_python: Path, app: Path, studies: str, port: int) -> list[str]:
    return [
        str(ml_python),
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        str(app),
        "--studies",
        studies,
        "--conf",
        "models",
        NAME,
        "--conf",
        "zoo_source",
        "github",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@pytest.fixture(scope="module")
def ml_python() -> Path:
    """Python of the cached MONAI Label venv (built on first use)."""
    start = time.monotonic()
    out = _run(["bash", str(ROOT / "scripts" / "monailabel_env.sh")], timeout=2000)
    _timed("monailabel venv (build or reuse)", start)
    return Path(out.stdout.strip().splitlines()[-1]) / "bin" / "python"


@pytest.fixture(scope="module")
def ml_app_cache(ml_python: Path) -> Path:
    """The monaibundle app, downloaded once per venv with ``monailabel apps --download``."""
    cached = ml_python.parents[1] / "artasyn-apps" / "monaibundle"
    if not cached.is_dir():
        start = time.monotonic()
        staging = Path(str(cached.parent) + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        _run(
            [
                str(ml_python),
                "-m",
                "monailabel.main",
                "apps",
                "--download",
                "--name",
                "monaibundle",
                "--output",
                str(staging),
            ],
            timeout=300,
        )
        try:
            staging.rename(cached.parent)
        except OSError:  # another test session got there first
            shutil.rmtree(staging)
        _timed("monailabel apps --download", start)
    return cached


def _app_with_bundle(cached: Path, bundle: Path, dest: Path) -> Path:
    """A fresh copy of the app with the bundle in ``model/<name>/`` (the training's outputs left behind)."""
    app = dest / "apps" / "monaibundle"
    shutil.copytree(cached, app)
    outputs = {bundle / d for d in ("runs", "data", "eval")}
    shutil.copytree(bundle, app / "model" / NAME, ignore=lambda d, names: [n for n in names if Path(d, n) in outputs])
    return app


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory) -> Path:
    """A copy of the bundle with models/model.pt from a one-iteration demo training (real monai.bundle run)
    and models/threshold.json from the evaluation workflow's calibration on the demo's test split."""
    start = time.monotonic()
    work = tmp_path_factory.mktemp("ml_train")
    demo = write_demo_dataset(work / "demo", n_train=4, n_test_healthy=2, n_test_diseased=2, size=256, seed=0)
    root = build_archive.copy_bundle(ROOT, work)
    shutil.rmtree(root / "models", ignore_errors=True)
    _run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "training",
            "--config_file",
            "configs/train.json",
            "--bundle_root",
            ".",
            "--dataset_dir",
            str(demo),
            "--train#trainer#max_epochs",
            "1",
            "--epoch_length",
            "1",
            "--val_interval",
            "1",
            "--num_workers",
            "0",
            "--batch_size",
            "2",
        ],
        timeout=900,
        cwd=root,
    )
    assert (root / "models" / "model.pt").is_file(), "demo training wrote no models/model.pt"
    _timed("demo training (1 iteration)", start)
    start = time.monotonic()
    _run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "evaluating",
            "--config_file",
            "['configs/train.json','configs/evaluate.json']",
            "--bundle_root",
            ".",
            "--dataset_dir",
            str(demo),
            "--calibrate",
            "True",
            "--num_workers",
            "0",
        ],
        timeout=900,
        cwd=root,
    )
    point = json.loads((root / "models" / "threshold.json").read_text())
    assert point.get("score_threshold") is not None, point
    _timed("demo evaluation with calibration", start)
    return root


def _study_image(name: str, index: int) -> np.ndarray:
    return make_phantom(STUDIES[name], seed=100 + index, diseased=True).image


@pytest.fixture(scope="module")
def studies(trained_bundle: Path, tmp_path_factory) -> Path:
    """Studies folder: diseased phantoms of odd sizes as PNG, NIfTI, a MONOCHROME1 CR with a VOI LUT and a
    MONOCHROME2 DX with a window (DICOM), and the demo's healthy training images."""
    folder = tmp_path_factory.mktemp("studies")
    writers = {
        ".png": write_png,
        ".gz": write_nifti,
        "cr.dcm": write_cr_monochrome1_voi_lut,
        "dx.dcm": write_dx_monochrome2_window,
    }
    for i, name in enumerate(STUDIES):
        writer = next(w for suffix, w in writers.items() if name.endswith(suffix))
        writer(folder / name, _study_image(name, i))
    for png in sorted((trained_bundle.parent / "demo" / "train" / "healthy").glob("*.png")):
        shutil.copy(png, folder / f"healthy_{png.name}")
    return folder


@pytest.fixture(scope="module")
def own_outputs(trained_bundle: Path, studies: Path, tmp_path_factory) -> Path:
    """The bundle's own inference (configs/inference.json) on the test studies."""
    start = time.monotonic()
    inputs = tmp_path_factory.mktemp("own_in")
    for name in STUDIES:
        shutil.copy(studies / name, inputs / name)
    out = tmp_path_factory.mktemp("own_out")
    _run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            ".",
            "--dataset_dir",
            str(inputs),
            "--output_dir",
            str(out),
        ],
        timeout=600,
        cwd=trained_bundle,
    )
    _timed(f"bundle inference ({len(STUDIES)} files)", start)
    return out


def _own(own_outputs: Path, study: str) -> tuple[np.ndarray, dict]:
    """The bundle's own mask and scores row for ``study``."""
    stem = study.split(".")[0]
    suffix = ".nii.gz" if study.endswith(".nii.gz") else ".png"
    rows = json.loads((own_outputs / "scores.json").read_text())["images"]
    row = next(r for r in rows if Path(r["file"]).name == study)
    return read_labels(own_outputs / f"{stem}_mask{suffix}"), row


@pytest.fixture(scope="module")
def server(ml_python: Path, ml_app_cache: Path, trained_bundle: Path, studies: Path, tmp_path_factory):
    """The MONAI Label server on the local studies folder, DICOM files included."""
    app = _app_with_bundle(ml_app_cache, trained_bundle, tmp_path_factory.mktemp("ml"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _ml_env(ml_python, MONAI_LABEL_DATASTORE_FILE_EXT=json.dumps(STUDY_PATTERNS))
    with _server(
        _ml_command(ml_python, app, str(studies), port),
        app.parent,
        app.parent / "server.log",
        f"{url}/info/",
        "MONAI Label (local studies)",
        env,
    ) as (body, log):
        yield {"url": url, "info": json.loads(body), "app": app, "bundle": app / "model" / NAME, "log": log}
    print(f"[monailabel test] timings: {TIMINGS}", file=sys.stderr)


def test_info_lists_2d_anomaly_segmentation(server):
    model = server["info"]["models"][NAME]
    assert model["type"] == "segmentation"
    assert model["dimension"] == 2
    assert model["labels"] == {"anomaly": 1}
    assert model["version"] == json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    assert NAME in server["info"]["trainers"]


def test_datastore_lists_dicom_studies(server):
    status, body = _http("GET", f"{server['url']}/datastore/?output=all")
    assert status == 200, body[:2000]
    listed = set(json.loads(body)["objects"])
    assert {name.split(".")[0] for name in STUDIES} <= listed


def _check_result(params: dict, own_row: dict, mask: np.ndarray, threshold: float) -> None:
    """The /infer JSON carries the image-level result of the bundle's own inference for the same file."""
    assert params["score"] == pytest.approx(own_row["score"], rel=1e-5, abs=1e-7)
    assert params["score_threshold"] == pytest.approx(threshold)
    assert params["predicted_label"] == own_row["predicted_label"] == int(params["score"] >= threshold)
    assert params["lungs_found"] == own_row["lungs_found"] and params["lungs_found"] in (0, 1, 2)
    assert params["mask_fraction"] == pytest.approx(float(mask.mean()), abs=1e-9)
    assert params["label_names"] == {"anomaly": 1}


@pytest.mark.parametrize("study", list(STUDIES))
def test_infer_equals_bundle_inference(server, own_outputs, trained_bundle, study, tmp_path):
    """/infer on each local study: the mask and the result JSON equal the bundle's own inference."""
    image_id = study.split(".")[0]
    start = time.monotonic()
    status, headers, body = _http_full("POST", f"{server['url']}/infer/{NAME}?image={image_id}&output=all")
    _timed(f"/infer {study}", start)
    params, filename, data = _parse_infer(status, headers, body, server["log"])
    suffix = ".nii.gz" if study.endswith((".nii.gz", ".dcm")) else ".png"  # DICOM: a NIfTI result (MONAILabelResultd)
    assert filename.endswith(suffix), filename
    result = tmp_path / f"result{suffix}"
    result.write_bytes(data)

    mask = read_labels(result)
    own, row = _own(own_outputs, study)
    assert mask.shape == own.shape == STUDIES[study]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert 0 < own.sum() < own.size, "the comparison needs a mask with both values"
    np.testing.assert_array_equal(mask, own)
    threshold = json.loads((trained_bundle / "models" / "threshold.json").read_text())["score_threshold"]
    _check_result(params, row, mask, threshold)


def test_dicom_reader_same_under_pydicom2(ml_python, tmp_path):
    """bundle/io.py under the MONAI Label venv's pydicom 2.4: tests/unit/test_io.py passes there, and every DICOM
    file (written here with pydicom 3, compressed ones included) reads to the same array as here."""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(ROOT)}
    version = _run(
        [str(ml_python), "-c", "import pydicom; print(pydicom.__version__)"], timeout=120, env=env
    ).stdout.strip()
    assert version.startswith("2."), f"the MONAI Label venv should have pydicom 2.x, has {version}"
    tests = _run(
        [str(ml_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_io.py"],
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    assert " passed" in tests.stdout and " failed" not in tests.stdout, tests.stdout[-3000:]

    from tests.unit.test_io import CASES, write_case

    files = []
    for case in [c for c in CASES if c.startswith("dcm_")]:
        (tmp_path / case).mkdir()
        files.append(write_case(case, tmp_path / case))
    for i, name in enumerate(DICOM_STUDIES):
        (tmp_path / name[:-4]).mkdir()
        writer = write_cr_monochrome1_voi_lut if "cr" in name else write_dx_monochrome2_window
        writer(tmp_path / name[:-4] / name, _study_image(name, i))
        files.append(tmp_path / name[:-4] / name)
        files.append(tmp_path / name[:-4])  # the one-file series folder
    out = tmp_path / "pydicom2.npz"
    code = (
        "import json, sys, numpy as np; from bundle.io import read_image; "
        "files = json.loads(sys.argv[1]); "
        "np.savez(sys.argv[2], **{str(i): read_image(f)[0] for i, f in enumerate(files)})"
    )
    _run([str(ml_python), "-c", code, json.dumps([str(f) for f in files]), str(out)], timeout=600, env=env)
    theirs = np.load(out)
    assert len(theirs.files) == len(files)
    for i, f in enumerate(files):
        np.testing.assert_allclose(theirs[str(i)], read_image(f)[0], rtol=0, atol=1e-6, err_msg=str(f))


def test_default_dicomweb_nifti_conversion_loses_display(ml_python, trained_bundle, studies, own_outputs, tmp_path):
    """Why DICOMweb needs MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI=false: MONAI Label's own conversion
    (monailabel.datastore.utils.convert.dicom_to_nifti, SimpleITK/GDCM) keeps stored values only, so the
    bundle sees other intensities than the DICOM displays. Prints the Dice of the bundle's masks on the
    converted files against its masks on the DICOM files."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    converted = tmp_path / "converted"
    converted.mkdir()
    for name in DICOM_STUDIES:
        series = tmp_path / name[:-4]  # a one-file series folder, as the DICOMweb datastore downloads it
        series.mkdir()
        shutil.copy(studies / name, series / name)
        code = (
            "import shutil, sys; from monailabel.datastore.utils.convert import dicom_to_nifti; "
            "shutil.move(dicom_to_nifti(sys.argv[1]), sys.argv[2])"
        )
        _run([str(ml_python), "-c", code, str(series), str(converted / f"{name[:-4]}.nii.gz")], timeout=300, env=env)
        shown, _ = read_image(studies / name)
        seen, meta = read_image(converted / f"{name[:-4]}.nii.gz")
        assert seen.shape == shown.shape == STUDIES[name]
        print(
            f"[monailabel test] {name} converted by MONAI Label: intensity rule {meta['intensity']}, "
            f"mean |difference| to the displayed image {np.abs(seen - shown).mean():.3f}",
            file=sys.stderr,
        )
        assert np.abs(seen - shown).max() > 0.05, "the default conversion now keeps the display: revisit the setting"
    out = tmp_path / "out"
    _run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            ".",
            "--dataset_dir",
            str(converted),
            "--output_dir",
            str(out),
        ],
        timeout=600,
        cwd=trained_bundle,
    )
    for name in DICOM_STUDIES:
        mask = read_labels(out / f"{name[:-4]}_mask.nii.gz")
        own, _ = _own(own_outputs, name)
        dice = 2 * np.logical_and(mask, own).sum() / max(1, mask.sum() + own.sum())
        print(
            f"[monailabel test] {name}: mask on MONAI Label's NIfTI conversion vs on the DICOM: Dice {dice:.3f}",
            file=sys.stderr,
        )


def test_train_one_epoch(server, studies):
    """MONAI Label training (`/train`, run id `run`) for one epoch on the demo's healthy images."""
    healthy = sorted(p for p in studies.glob("healthy_*.png"))
    assert healthy
    empty = studies.parent / "empty_label.png"
    write_png(empty, np.zeros((256, 256), np.uint8))
    for p in healthy:  # MONAI Label trains only on studies that have a label (ours are ignored: unsupervised)
        body, headers = _multipart("label", empty)
        status, reply = _http("PUT", f"{server['url']}/datastore/label?image={p.stem}&tag=final", body, headers)
        assert status == 200, reply
    model_pt = server["bundle"] / "models" / "model.pt"
    start_weights = torch.load(model_pt, map_location="cpu")  # the weights MONAI Label starts from (pretrained)
    request = {
        "max_epochs": 1,
        "epoch_length": 2,
        "val_split": -1,
        "device": "cpu",
        "multi_gpu": False,
        "pretrained": True,
    }
    start = time.monotonic()
    status, reply = _http(
        "POST",
        f"{server['url']}/train/{NAME}?run_sync=true",
        json.dumps(request).encode(),
        {"Content-Type": "application/json"},
        timeout=900,
    )
    _timed("/train 1 epoch", start)
    assert status == 200, f"/train failed ({status}): {reply[:2000]!r}\n{server['log']()}"
    finals = sorted((server["bundle"] / "runs" / "train" / "checkpoints").glob("checkpoint_final_iteration=*.pt"))
    assert finals, f"no final training checkpoint written:\n{server['log']()}"
    trained = torch.load(finals[-1], map_location="cpu", weights_only=False)["model"]
    assert trained.keys() == start_weights.keys()
    assert any(not torch.equal(trained[k], start_weights[k]) for k in trained), "training did not change the weights"
    saved = torch.load(model_pt, map_location="cpu")  # models/model.pt = the final weights (select_best_model false)
    assert all(torch.equal(saved[k], trained[k]) for k in trained)


# ----------------------------------------------------------------------------------------------------------
# a real PACS: Orthanc + its DICOMweb plugin, MONAI Label reading the studies over DICOMweb
# ----------------------------------------------------------------------------------------------------------

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture(scope="module")
def orthanc(studies: Path, tmp_path_factory):
    """Orthanc (Debian packages orthanc + orthanc-dicomweb; .ci/run installs them) on free localhost ports,
    holding the CR and DX studies, uploaded with POST /instances. Yields its DICOMweb URL and the series."""
    if shutil.which("Orthanc") is None or not ORTHANC_PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install -y orthanc orthanc-dicomweb)")
    work = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "artasyn-test-pacs",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config, indent=2))
    url = f"http://127.0.0.1:{http_port}"
    with _server(
        ["Orthanc", str(work / "orthanc.json")], work, work / "orthanc.log", f"{url}/system", "Orthanc", wait_s=120
    ) as (_, log):
        import pydicom

        series = {}
        for name in DICOM_STUDIES:
            status, reply = _http(
                "POST", f"{url}/instances", (studies / name).read_bytes(), {"Content-Type": "application/dicom"}
            )
            assert status == 200 and json.loads(reply)["Status"] == "Success", (
                f"upload of {name}: {status} {reply[:500]!r}\n{log()}"
            )
            series[name] = str(pydicom.dcmread(studies / name, stop_before_pixels=True).SeriesInstanceUID)
        status, reply = _http("GET", f"{url}/dicom-web/series")
        assert status == 200 and len(json.loads(reply)) == len(DICOM_STUDIES), reply[:1000]
        yield {"dicomweb": f"{url}/dicom-web", "series": series, "log": log}


@pytest.fixture(scope="module")
def dicomweb_server(ml_python: Path, ml_app_cache: Path, trained_bundle: Path, orthanc, tmp_path_factory):
    """MONAI Label with Orthanc's DICOMweb URL as its studies; series handed to the bundle as downloaded
    (MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI=false: a folder with the series' one DICOM file)."""
    work = tmp_path_factory.mktemp("ml_dicomweb")
    app = _app_with_bundle(ml_app_cache, trained_bundle, work)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _ml_env(
        ml_python,
        MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI="false",
        MONAI_LABEL_DICOMWEB_SEARCH_FILTER=json.dumps({}),
        MONAI_LABEL_DICOMWEB_CACHE_PATH=str(work / "dicomweb-cache"),
    )
    with _server(
        _ml_command(ml_python, app, orthanc["dicomweb"], port),
        app.parent,
        app.parent / "server.log",
        f"{url}/info/",
        "MONAI Label (DICOMweb)",
        env,
    ) as (body, log):
        yield {"url": url, "info": json.loads(body), "log": lambda: log() + "\n--- Orthanc ---\n" + orthanc["log"]()}


def test_dicomweb_datastore_lists_series(dicomweb_server, orthanc):
    """The DICOMweb datastore finds both series (search filter {}: every series; its default is CT only)."""
    assert dicomweb_server["info"]["models"][NAME]["labels"] == {"anomaly": 1}
    # /info/ counts the series the datastore lists over QIDO-RS (/datastore/ shows only those already fetched)
    assert dicomweb_server["info"]["datastore"]["total"] == len(orthanc["series"]), dicomweb_server["log"]()


@pytest.mark.parametrize("study", DICOM_STUDIES)
def test_dicomweb_infer_equals_bundle_inference(dicomweb_server, orthanc, own_outputs, trained_bundle, study, tmp_path):
    """/infer on a series fetched from Orthanc over DICOMweb equals the bundle's own inference on the file."""
    series_uid = orthanc["series"][study]
    start = time.monotonic()
    status, headers, body = _http_full("POST", f"{dicomweb_server['url']}/infer/{NAME}?image={series_uid}&output=all")
    _timed(f"/infer over DICOMweb {study}", start)
    params, filename, data = _parse_infer(status, headers, body, dicomweb_server["log"])
    assert filename.endswith(".nii.gz"), filename
    (tmp_path / "result.nii.gz").write_bytes(data)
    mask = read_labels(tmp_path / "result.nii.gz")
    own, row = _own(own_outputs, study)
    assert mask.shape == own.shape == STUDIES[study]
    assert 0 < own.sum() < own.size
    dice = 2 * np.logical_and(mask, own).sum() / (mask.sum() + own.sum())
    print(f"[monailabel test] DICOMweb {study}: Dice {dice:.6f} against the bundle's own mask", file=sys.stderr)
    np.testing.assert_array_equal(mask, own)  # the same DICOM file read by the same reader: pixel for pixel
    threshold = json.loads((trained_bundle / "models" / "threshold.json").read_text())["score_threshold"]
    _check_result(params, row, mask, threshold)
