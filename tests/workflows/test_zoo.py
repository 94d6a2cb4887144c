"""Model-zoo readiness: metadata schema, network in/out, TorchScript export, config style, large files, archive."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "meta_schema_20240725.json"  # copy of the zoo's schema (shared/monai/)
SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"
CONFIGS = ROOT / "configs"


def _load_archive_module():
    spec = importlib.util.spec_from_file_location("build_archive", ROOT / "scripts" / "build_archive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_archive = _load_archive_module()


def network_def(bundle_root: Path = ROOT) -> torch.nn.Module:
    """``network_def`` of the bundle's inference.json, instantiated."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_root / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_root)
    return parser.get_parsed_content("network_def")


def bundle_with_weights(dest: Path) -> Path:
    """A copy of the bundle under ``dest/<name>/`` with ``models/model.pt``: the repository's weights when
    present, else a seeded, untrained ``network_def`` (enough for format and export checks)."""
    root = build_archive.copy_bundle(ROOT, dest)
    weights = root / "models" / "model.pt"
    if not weights.exists():
        torch.manual_seed(0)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(network_def(root).state_dict(), weights)
    return root


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory) -> Path:
    return bundle_with_weights(tmp_path_factory.mktemp("zoo"))


# ----------------------------------------------------------------------------------------------------------
# metadata
# ----------------------------------------------------------------------------------------------------------


def _verify_metadata(meta: dict, workdir: Path) -> None:
    """monai.bundle verify_metadata offline: the schema is put where the command looks before downloading."""
    from monai.bundle import verify_metadata

    (workdir / "eval").mkdir(parents=True, exist_ok=True)
    shutil.copy(SCHEMA, workdir / "eval" / "schema.json")
    meta_file = workdir / "metadata.json"
    meta_file.write_text(json.dumps(meta, indent=4))
    verify_metadata(meta_file=str(meta_file), filepath=str(workdir / "eval" / "schema.json"), hash_val=SCHEMA_MD5)


def test_metadata_passes_schema_offline(tmp_path):
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    _verify_metadata(meta, tmp_path)


@pytest.mark.parametrize("drop", ["network_data_format", "version", "monai_version"])
def test_metadata_schema_check_catches_missing_field(tmp_path, drop):
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta[drop]
    with pytest.raises(ValueError, match=drop):
        _verify_metadata(meta, tmp_path)


def test_metadata_versions_and_changelog():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    version = meta["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert version in meta["changelog"], "the changelog must describe the current version"
    newest = max(meta["changelog"], key=lambda v: tuple(int(p) for p in v.split(".")))
    assert newest == version
    import bundle

    assert bundle.__version__ == version
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(version)}"', pyproject, flags=re.M)


def test_metadata_io_as_monai_label_reads_it():
    """MONAI Label takes the first input/output keys, labels from channel_def (label value -> name of the mask
    it writes) and 2D from spatial_shape; the zoo reads ``pred`` as the network's output."""
    fmt = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]
    (in_key, image), (out_key, pred) = next(iter(fmt["inputs"].items())), next(iter(fmt["outputs"].items()))
    assert (in_key, out_key) == ("image", "pred")
    assert len(image["spatial_shape"]) == 2 and image["num_channels"] == 1
    # as monailabel/tasks/infer/bundle.py derives them
    labels = {v.lower(): int(k) for k, v in pred["channel_def"].items() if v.lower() != "background"}
    assert labels == {"anomaly": 1}
    assert len(pred["channel_def"]) == pred["num_channels"] == 1, "one channel_def entry per output channel"
    post = fmt["post_processed_outputs"]["pred"]
    assert post["channel_def"] == pred["channel_def"] and post["format"] == "segmentation"


def test_outputs_match_network_and_postprocessing(bundle_copy, tmp_path):
    """outputs.pred describes what network_def returns, post_processed_outputs.pred the mask the
    postprocessing makes (the input's own size), and post_transforms give MONAI Label that mask as (x, y)
    plus the result JSON."""
    from monai.bundle import ConfigParser

    from bundle.data.phantoms import make_phantom
    from bundle.io import write_png

    fmt = json.loads((bundle_copy / "configs" / "metadata.json").read_text())["network_data_format"]
    out, post = fmt["outputs"]["pred"], fmt["post_processed_outputs"]["pred"]
    parser = ConfigParser()
    parser.read_config(str(bundle_copy / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_copy), "device": "cpu"})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_copy / "models" / "model.pt", map_location="cpu"))
    network.eval()
    size = (150, 120)
    write_png(tmp_path / "x.png", make_phantom(size, seed=3, diseased=True).image)
    results = {}
    for post_id in ("postprocessing", "post_transforms"):
        item = parser.get_parsed_content("preprocessing", instantiate=True)({"image": str(tmp_path / "x.png")})
        with torch.no_grad():
            item["pred"] = network(item["image"][None])[0]
        assert item["pred"].shape == (out["num_channels"], *out["spatial_shape"])
        assert item["pred"].dtype == getattr(torch, out["dtype"])
        results[post_id] = parser.get_parsed_content(post_id, instantiate=True)(item)
    mask = results["postprocessing"]["pred"]
    assert mask.dtype == getattr(torch, post["dtype"]) and tuple(mask.shape) == size  # (H, W): one channel, squeezed
    assert set(torch.unique(mask).tolist()) <= set(range(post["value_range"][0], post["value_range"][1] + 1))
    ml = results["post_transforms"]
    torch.testing.assert_close(torch.as_tensor(ml["pred"]), torch.as_tensor(mask).T)  # MONAI writers read (x, y)
    assert "image" not in ml and set(ml["result"]) >= {"score", "predicted_label", "lungs_found", "mask_fraction"}


def test_model_card_zoo_template():
    """docs/README.md has the model-zoo template's sections, a BibTeX citation, and links only inside the bundle."""
    card = (ROOT / "docs" / "README.md").read_text()
    headings = set(re.findall(r"^##+ (.+?)\s*$", card, flags=re.M))
    for section in (
        "Tags",
        "Authors",
        "Intended use",
        "Model overview",
        "Data",
        "Training configuration",
        "How to run",
        "System Configuration",
        "Performance",
        "Limitations",
        "Citation",
        "References",
        "Data and licence",
    ):
        assert section in headings, f"model card lacks the section {section!r}"
    bibtex = re.search(r"```bibtex\n(.+?)```", card, flags=re.S)
    assert bibtex and re.search(r"@\w+\{\w+,", bibtex.group(1)) and "2512.00310" in bibtex.group(1)
    files = build_archive.bundle_files(ROOT)
    assert build_archive.broken_doc_links(ROOT, files) == []


def test_archive_refuses_broken_doc_links(bundle_copy, tmp_path):
    src = Path(shutil.copytree(bundle_copy, tmp_path / "src"))
    shutil.copy(ROOT / "pyproject.toml", src)
    card = src / "docs" / "README.md"
    card.write_text(card.read_text() + "\nSee [the tests](../tests/test_zoo.py) and [a site](https://monai.io).\n")
    with pytest.raises(ValueError, match=r"docs/README.md: \.\./tests/test_zoo.py"):
        build_archive.build_archive(src, tmp_path / "dist")


def test_models_folder_readme():
    """models/ exists in git with a README (weights ignored), naming how weights are made and fetched."""
    readme = (ROOT / "models" / "README.md").read_text()
    for needed in ("large_files.yml", "run training", "download_large_files", "model.pt", "threshold.json"):
        assert needed in readme, needed


# ----------------------------------------------------------------------------------------------------------
# configs and large files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_json_config_zoo_style(path):
    """Parses, and is formatted as the zoo's pre-commit formats JSON: 4-space indent, keys in written order."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    styles = {json.dumps(data, indent=4, ensure_ascii=a) + "\n" for a in (True, False)}
    assert text in styles, f"{path.name} is not 4-space indented JSON (reformat with json.dumps(indent=4))"


def test_large_files_yml():
    import yaml

    spec = yaml.safe_load((ROOT / "large_files.yml").read_text())
    entries = spec["large_files"]
    paths = [e["path"] for e in entries]
    assert "models/model.pt" in paths and len(set(paths)) == len(paths)
    for e in entries:
        assert set(e) == {"path", "url", "hash_val", "hash_type"}, e
        assert e["path"].startswith("models/") and not os.path.isabs(e["path"])
        assert e["hash_type"] in {"md5", "sha1", "sha256", "sha512"}
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"/models/*.pt", "/models/*.ts"} <= set(ignored), "weights listed in large_files.yml stay out of git"
    assert "/models/" not in ignored and "/models/*" not in ignored, "models/README.md stays in git"


# ----------------------------------------------------------------------------------------------------------
# network and export
# ----------------------------------------------------------------------------------------------------------


def test_verify_net_in_out(bundle_copy):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_copy / "configs" / "metadata.json"),
        config_file=str(bundle_copy / "configs" / "inference.json"),
        device="cpu",
        bundle_root=str(bundle_copy),
    )


def test_ckpt_export_matches_checkpoint(bundle_copy):
    from monai.bundle import ckpt_export

    ts_file = bundle_copy / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_file),
        ckpt_file=str(bundle_copy / "models" / "model.pt"),
        meta_file=str(bundle_copy / "configs" / "metadata.json"),
        config_file=str(bundle_copy / "configs" / "inference.json"),
        bundle_root=str(bundle_copy),
    )
    scripted = torch.jit.load(str(ts_file), map_location="cpu").eval()
    net = network_def(bundle_copy)
    net.load_state_dict(torch.load(bundle_copy / "models" / "model.pt", map_location="cpu"))
    net.eval()
    x = torch.rand(2, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = net(x), scripted(x)
    assert got.shape == expected.shape == (2, 1, 256, 256)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    extra = {"metadata.json": ""}
    torch.jit.load(str(ts_file), map_location="cpu", _extra_files=extra)
    meta = json.loads((bundle_copy / "configs" / "metadata.json").read_text())
    assert json.loads(extra["metadata.json"])["version"] == meta["version"]


# ----------------------------------------------------------------------------------------------------------
# distributable archive
# ----------------------------------------------------------------------------------------------------------


def _archive_names(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return set(zf.namelist())


def test_archive_holds_exactly_the_bundle(bundle_copy, tmp_path):
    src = Path(shutil.copytree(bundle_copy, tmp_path / "src"))
    shutil.copy(ROOT / "pyproject.toml", src)
    # things that must stay out
    for junk in (
        "tests/test_x.py",
        "data/demo/a.png",
        "bundle/__pycache__/io.cpython-311.pyc",
        "runs/x.log",
        "eval/schema.json",
    ):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("x")
    zip_path = build_archive.build_archive(src, tmp_path / "dist")
    name = build_archive.bundle_name(src)
    version = json.loads((src / "configs" / "metadata.json").read_text())["version"]
    assert zip_path.name == f"{name}_v{version}.zip" and name == "artasyn_cxr_anomaly_segmentation"
    names = _archive_names(zip_path)
    assert all(n.startswith(f"{name}/") for n in names)
    tops = {n.split("/")[1] for n in names}
    assert tops == {"configs", "bundle", "models", "docs", "LICENSE", "large_files.yml"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    expected = {f"{name}/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "bundle").rglob("*.py")}
    assert expected <= names
    assert f"{name}/models/model.pt" in names and f"{name}/configs/inference.json" in names


def test_archive_refuses_without_weights(tmp_path):
    src = build_archive.copy_bundle(ROOT, tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", src)
    for w in (src / "models").glob("*.pt"):
        w.unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        build_archive.build_archive(src, tmp_path / "dist")
    assert not list((tmp_path / "dist").glob("*.zip"))
    assert build_archive.main(["--bundle-root", str(src), "--output", str(tmp_path / "dist")]) == 1


def test_archive_large_files_hash_checks(bundle_copy, tmp_path):
    """The archive's large_files.yml carries the md5 of the weights it ships, checked by monai.bundle."""
    from monai.apps.utils import HashCheckError
    from monai.bundle import download_large_files

    src = Path(shutil.copytree(bundle_copy, tmp_path / "src"))
    shutil.copy(ROOT / "pyproject.toml", src)
    (src / "models" / "model.ts").unlink(missing_ok=True)
    zip_path = build_archive.build_archive(src, tmp_path / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked" / build_archive.bundle_name(src)
    import yaml

    entry = next(
        e
        for e in yaml.safe_load((unpacked / "large_files.yml").read_text())["large_files"]
        if e["path"] == "models/model.pt"
    )
    assert entry["hash_val"] == hashlib.md5((src / "models" / "model.pt").read_bytes()).hexdigest()
    spec = yaml.safe_load((unpacked / "large_files.yml").read_text())
    spec["large_files"] = [entry]  # model.ts is not shipped here and has no url to download from
    (unpacked / "large_files.yml").write_text(yaml.safe_dump(spec))
    download_large_files(bundle_path=str(unpacked))  # existing file, matching hash: nothing to download
    with open(unpacked / "models" / "model.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(HashCheckError):
        download_large_files(bundle_path=str(unpacked))


def test_archive_runs_inference_on_its_own(bundle_copy, tmp_path):
    """Unpacked in an empty folder, the archive runs its inference workflow with its own code and weights."""
    from bundle.data.phantoms import make_phantom
    from bundle.io import read_labels, write_png

    src = Path(shutil.copytree(bundle_copy, tmp_path / "src"))
    shutil.copy(ROOT / "pyproject.toml", src)
    zip_path = build_archive.build_archive(src, tmp_path / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked" / build_archive.bundle_name(src)
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a.png": (160, 128), "b.png": (128, 128)}
    for i, (name, size) in enumerate(sizes.items()):
        write_png(images / name, make_phantom(size, seed=i, diseased=True).image)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "out"
    args = [
        "run",
        "--config_file",
        "configs/inference.json",
        "--bundle_root",
        ".",
        "--dataset_dir",
        str(images),
        "--output_dir",
        str(out),
    ]
    # `python -m monai.bundle run ...`, first printing which `bundle` package the folder resolves to
    code = (
        "import sys, runpy, bundle; print('BUNDLE_FROM', bundle.__file__, flush=True); "
        f"sys.argv = ['monai.bundle'] + {args!r}; runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=unpacked, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    origin = next(line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("BUNDLE_FROM "))
    assert Path(origin).resolve().is_relative_to(unpacked.resolve()), origin
    for name, size in sizes.items():
        mask = read_labels(out / name.replace(".png", "_mask.png"))
        assert mask.shape == size and set(np.unique(mask)) <= {0, 1}


@pytest.mark.slow
def test_unpacked_archive_passes_zoo_checks_with_trained_weights(tmp_path):
    """The zoo's checks, run as the README shows them, inside an unpacked archive whose models/model.pt comes
    from a real (one-iteration demo) training: metadata schema, verify_net_in_out, ckpt_export, large-file hashes."""
    from bundle.data.demo import write_demo_dataset

    demo = write_demo_dataset(tmp_path / "demo", n_train=4, n_test_healthy=2, n_test_diseased=2, size=256, seed=0)
    src = build_archive.copy_bundle(ROOT, tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", src)
    for made in ("model.pt", "model.ts", "threshold.json"):  # whatever this checkout holds: train afresh
        (src / "models" / made).unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the archive's own code, from its folder

    def monai_bundle(*args: str, cwd: Path) -> None:
        run = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
        )
        assert run.returncode == 0, f"monai.bundle {' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    monai_bundle(
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
        "2",
        "--val_interval",
        "1",
        "--num_workers",
        "0",
        "--batch_size",
        "2",
        cwd=src,
    )
    trained = torch.load(src / "models" / "model.pt", map_location="cpu")
    assert trained.keys() == network_def(src).state_dict().keys()
    zip_path = build_archive.build_archive(src, tmp_path / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / build_archive.bundle_name(src)
    assert (bundle / "models" / "model.pt").read_bytes() == (src / "models" / "model.pt").read_bytes()
    assert (bundle / "models" / "README.md").is_file() and not (bundle / "tests").exists()
    (bundle / "eval").mkdir()
    shutil.copy(SCHEMA, bundle / "eval" / "schema.json")  # offline: verify_metadata skips the download
    monai_bundle(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", "eval/schema.json", cwd=bundle
    )
    monai_bundle(
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
        "--device",
        "cpu",
        cwd=bundle,
    )
    monai_bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        "models/model.ts",
        "--ckpt_file",
        "models/model.pt",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
        cwd=bundle,
    )
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"), map_location="cpu").eval()
    net = network_def(bundle)
    net.load_state_dict(trained)
    net.eval()
    x = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-6)
    import yaml

    spec = yaml.safe_load((bundle / "large_files.yml").read_text())
    shipped = [e for e in spec["large_files"] if (bundle / e["path"]).is_file() and e["path"] == "models/model.pt"]
    assert (
        shipped
        and shipped[0]["hash_val"]
        == hashlib.md5(trained_bytes := (bundle / "models" / "model.pt").read_bytes()).hexdigest()
    )
    spec["large_files"] = shipped  # model.ts was made here, after packing: it has no url and no hash
    (bundle / "large_files.yml").write_text(yaml.safe_dump(spec))
    monai_bundle("download_large_files", "--bundle_path", ".", cwd=bundle)  # present, hash matches: nothing fetched
    assert (bundle / "models" / "model.pt").read_bytes() == trained_bytes
