"""The bundle, unchanged, in a real MONAI Label server (monaibundle app) running in its own environment.

The MONAI Label environment is built once by ``scripts/monailabel_env.sh`` (cached; the first build takes
several minutes) and the app is fetched with ``monailabel apps --download --name monaibundle``. The bundle
is copied under the app's ``model/<name>/`` with weights from a one-iteration demo training
(``python -m monai.bundle run training``), the server is started on 127.0.0.1, and its results are
compared with the bundle's own inference (``configs/inference.json``) on the same files.
How MONAI Label runs the bundle: docs/monailabel.md.
"""

from __future__ import annotations

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
from bundle.io import read_labels, write_nifti, write_png

from .test_zoo import ROOT, build_archive

pytestmark = [pytest.mark.monailabel, pytest.mark.slow, pytest.mark.timeout(2400)]

NAME = build_archive.bundle_name(ROOT)
STUDIES = {"cxr_wide.png": (300, 240), "cxr_nifti.nii.gz": (232, 200)}  # (H, W): not 256, not square
TIMINGS: dict[str, float] = {}


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def _timed(name: str, start: float) -> None:
    TIMINGS[name] = round(time.monotonic() - start, 1)
    print(f"[monailabel test] {name}: {TIMINGS[name]} s", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 600) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _multipart(field: str, path: Path) -> tuple[bytes, dict]:
    boundary = "artasyn-boundary-7f3a"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def ml_python() -> Path:
    """Python of the cached MONAI Label venv (built on first use)."""
    start = time.monotonic()
    out = _run(["bash", str(ROOT / "scripts" / "monailabel_env.sh")], timeout=2000)
    _timed("monailabel venv (build or reuse)", start)
    return Path(out.stdout.strip().splitlines()[-1]) / "bin" / "python"


@pytest.fixture(scope="module")
def ml_app(ml_python: Path, tmp_path_factory) -> Path:
    """A fresh copy of the monaibundle app, downloaded once per venv with ``monailabel apps --download``."""
    cached = ml_python.parents[1] / "artasyn-apps" / "monaibundle"
    if not cached.is_dir():
        start = time.monotonic()
        staging = Path(str(cached.parent) + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        _run([str(ml_python), "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", str(staging)], timeout=300)
        try:
            staging.rename(cached.parent)
        except OSError:  # another test session got there first
            shutil.rmtree(staging)
        _timed("monailabel apps --download", start)
    app = tmp_path_factory.mktemp("ml") / "apps" / "monaibundle"
    shutil.copytree(cached, app)
    return app


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory) -> Path:
    """A copy of the bundle with models/model.pt from a one-iteration demo training (real monai.bundle run)."""
    start = time.monotonic()
    work = tmp_path_factory.mktemp("ml_train")
    demo = write_demo_dataset(work / "demo", n_train=4, n_test_healthy=2, n_test_diseased=2, size=256, seed=0)
    root = build_archive.copy_bundle(ROOT, work)
    shutil.rmtree(root / "models", ignore_errors=True)
    _run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
         "--bundle_root", ".", "--dataset_dir", str(demo), "--train#trainer#max_epochs", "1", "--val_interval", "1",
         "--num_workers", "0", "--batch_size", "2"],
        timeout=900, cwd=root,
    )
    assert (root / "models" / "model.pt").is_file(), "demo training wrote no models/model.pt"
    _timed("demo training (1 iteration)", start)
    return root


@pytest.fixture(scope="module")
def studies(trained_bundle: Path, tmp_path_factory) -> Path:
    """Studies folder: two diseased phantoms (PNG, NIfTI) of odd sizes and the demo's healthy training images."""
    folder = tmp_path_factory.mktemp("studies")
    for i, (name, size) in enumerate(STUDIES.items()):
        image = make_phantom(size, seed=100 + i, diseased=True).image
        (write_png if name.endswith(".png") else write_nifti)(folder / name, image)
    for png in sorted((trained_bundle.parent / "demo" / "train" / "healthy").glob("*.png")):
        shutil.copy(png, folder / f"healthy_{png.name}")
    return folder


@pytest.fixture(scope="module")
def own_outputs(trained_bundle: Path, studies: Path, tmp_path_factory) -> Path:
    """The bundle's own inference (configs/inference.json) on the two test studies."""
    start = time.monotonic()
    inputs = tmp_path_factory.mktemp("own_in")
    for name in STUDIES:
        shutil.copy(studies / name, inputs / name)
    out = tmp_path_factory.mktemp("own_out")
    _run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", ".",
         "--dataset_dir", str(inputs), "--output_dir", str(out)],
        timeout=600, cwd=trained_bundle,
    )
    _timed("bundle inference (2 files)", start)
    return out


@pytest.fixture(scope="module")
def server(ml_python: Path, ml_app: Path, trained_bundle: Path, studies: Path):
    """The MONAI Label server with the bundle in model/<name>/; stopped by its process id at the end."""
    outputs = {trained_bundle / d for d in ("runs", "data", "eval")}  # the training's outputs stay behind
    shutil.copytree(trained_bundle, ml_app / "model" / NAME, ignore=lambda d, names: [n for n in names if Path(d, n) in outputs])
    port = _free_port()
    log = open(ml_app.parent / "server.log", "w")
    cmd = [str(ml_python), "-m", "monailabel.main", "start_server", "--app", str(ml_app), "--studies", str(studies),
           "--conf", "models", NAME, "--conf", "zoo_source", "github", "--host", "127.0.0.1", "--port", str(port)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ml_app.parent, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        log.flush()
        return (ml_app.parent / "server.log").read_text(errors="replace")[-6000:]

    try:
        info = None
        while time.monotonic() - start < 300:
            if proc.poll() is not None:
                raise AssertionError(f"MONAI Label server exited with {proc.returncode}:\n{log_tail()}")
            try:
                status, body = _http("GET", f"{url}/info/", timeout=10)
                if status == 200:
                    info = json.loads(body)
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        assert info is not None, f"MONAI Label server not ready after 300 s:\n{log_tail()}"
        _timed("server start until /info/", start)
        yield {"url": url, "info": info, "app": ml_app, "bundle": ml_app / "model" / NAME, "log": log_tail}
    finally:
        # the server and any child it started: its own process group, by the server's process id
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        log.close()
        print(f"[monailabel test] timings: {TIMINGS}", file=sys.stderr)


def test_info_lists_2d_anomaly_segmentation(server):
    model = server["info"]["models"][NAME]
    assert model["type"] == "segmentation"
    assert model["dimension"] == 2
    assert model["labels"] == {"anomaly": 1}
    assert model["version"] == json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    assert NAME in server["info"]["trainers"]


@pytest.mark.parametrize("study", list(STUDIES))
def test_infer_equals_bundle_inference(server, own_outputs, study, tmp_path):
    image_id = study.split(".")[0]
    start = time.monotonic()
    status, body = _http("POST", f"{server['url']}/infer/{NAME}?image={image_id}&output=image")
    _timed(f"/infer {study}", start)
    assert status == 200, f"/infer failed ({status}): {body[:2000]!r}\n{server['log']()}"
    suffix = ".nii.gz" if study.endswith(".nii.gz") else ".png"
    result = tmp_path / f"result{suffix}"
    result.write_bytes(body)

    mask = read_labels(result)
    own = read_labels(own_outputs / f"{image_id}_mask{suffix}")
    assert mask.shape == own.shape == STUDIES[study]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert 0 < own.sum() < own.size, "the comparison needs a mask with both values"
    np.testing.assert_array_equal(mask, own)


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
    request = {"max_epochs": 1, "val_split": -1, "device": "cpu", "multi_gpu": False, "pretrained": True}
    start = time.monotonic()
    status, reply = _http("POST", f"{server['url']}/train/{NAME}?run_sync=true", json.dumps(request).encode(),
                          {"Content-Type": "application/json"}, timeout=900)
    _timed("/train 1 epoch", start)
    assert status == 200, f"/train failed ({status}): {reply[:2000]!r}\n{server['log']()}"
    finals = sorted((server["bundle"] / "runs" / "train" / "checkpoints").glob("checkpoint_final_iteration=*.pt"))
    assert finals, f"no final training checkpoint written:\n{server['log']()}"
    trained = torch.load(finals[-1], map_location="cpu", weights_only=False)["model"]
    assert trained.keys() == start_weights.keys()
    assert any(not torch.equal(trained[k], start_weights[k]) for k in trained), "training did not change the weights"
    saved = torch.load(model_pt, map_location="cpu")  # models/model.pt = the final weights (select_best_model false)
    assert all(torch.equal(saved[k], trained[k]) for k in trained)
