"""The embedded demo dataset: synthetic chest X-ray phantoms written in the published folder layout.

Layout (the same as the real datasets, so every command works unchanged on demo and real data)::

    <root>/README.txt                          says the data are synthetic
    <root>/demo.json                           the generator's parameters (to recognise a finished dataset)
    <root>/train/healthy/train_0000.png ...    healthy phantoms
    <root>/test/healthy/test_healthy_0000.png ...
    <root>/test/diseased/test_diseased_0000.png ...
    <root>/ground_truth/diseased/test_diseased_0000.png ...   lesion masks, 0 / 255, same file names

Images are 8-bit grayscale PNGs (bright bone). The dataset is built in a temporary folder beside
``root`` and renamed into place in one step, so several processes (torchrun ranks) may ask for it at
once: one rename wins, the others discard their copy and use the winner's.

Command line::

    python -m bundle.data.demo --root data/demo_big --n_train 500 --size 512
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bundle.data.phantoms import make_phantom
from bundle.io import atomic_write, write_png

__all__ = ["write_demo_dataset", "demo_dataset_dir", "DEMO_SUBDIR"]

logger = logging.getLogger(__name__)

#: where the bundle keeps its demo dataset, relative to the bundle root
DEMO_SUBDIR = os.path.join("data", "demo")
_MANIFEST = "demo.json"
_README = """Synthetic demo data: NOT real chest X-rays.

Every image here is a procedurally generated chest X-ray phantom (bundle/data/phantoms.py), made so
that the bundle's commands run out of the box. Results on these images say nothing about clinical
performance. "Diseased" images carry synthetic opacities (lobar consolidation with air bronchograms,
rounded consolidations, patchy lower-zone opacities, ground-glass haze, nodules, pleural effusions;
bundle/data/lesions.py) from a generator independent of the ART-ASyn training synthesis; their exact masks are in
ground_truth/diseased/ (0 = normal, 255 = lesion) under the same file names.

Parameters: {params}
Regenerate: python -m bundle.data.demo --root <folder> --n_train N --n_test_healthy N --n_test_diseased N --size S --seed K
"""


def _image_seed(seed: int, split: int, index: int) -> int:
    """An independent, reproducible phantom seed for each (dataset seed, split, index)."""
    return int(np.random.SeedSequence([seed, split, index]).generate_state(1)[0])


def _plan(n_train: int, n_test_healthy: int, n_test_diseased: int, seed: int) -> list[tuple[str, int, bool]]:
    """(relative path, phantom seed, diseased) for every image of the dataset."""
    plan = [(f"train/healthy/train_{i:04d}.png", _image_seed(seed, 0, i), False) for i in range(n_train)]
    plan += [(f"test/healthy/test_healthy_{i:04d}.png", _image_seed(seed, 1, i), False) for i in range(n_test_healthy)]
    plan += [(f"test/diseased/test_diseased_{i:04d}.png", _image_seed(seed, 2, i), True) for i in range(n_test_diseased)]
    return plan


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_demo_dataset(
    root: str | os.PathLike,
    n_train: int = 200,
    n_test_healthy: int = 25,
    n_test_diseased: int = 25,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write (or reuse) a synthetic demo dataset in the published folder layout.

    Deterministic: the same arguments give byte-identical files. When ``root`` already holds a demo
    dataset with the same parameters it is reused as it is; a different demo dataset or any other
    non-empty folder there is never overwritten (``FileExistsError``).

    Args:
        root: dataset folder to create.
        n_train: healthy training images (``train/healthy``).
        n_test_healthy: healthy test images (``test/healthy``).
        n_test_diseased: diseased test images (``test/diseased``), each with a mask in ``ground_truth/diseased``.
        size: image side in pixels.
        seed: dataset seed; every image gets its own seed derived from it.

    Returns:
        ``Path(root)``.
    """
    root = Path(root).absolute()
    counts = {"n_train": n_train, "n_test_healthy": n_test_healthy, "n_test_diseased": n_test_diseased}
    for name, n in counts.items():
        if int(n) != n or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    if n_train + n_test_healthy + n_test_diseased == 0:
        raise ValueError("the demo dataset needs at least one image")
    params = {**{k: int(v) for k, v in counts.items()}, "size": int(size), "seed": int(seed), "format": 2}

    if root.exists():
        return _reuse(root, params)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        _write_into(tmp, params)
        try:
            os.rename(tmp, root)  # atomic; fails when another process has put a non-empty folder there
        except OSError:
            if not root.exists():
                raise
            logger.info("demo dataset %s was written concurrently by another process; using that one", root)
            return _reuse(root, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote synthetic demo dataset (%s) to %s", ", ".join(f"{k}={v}" for k, v in params.items()), root)
    return root


def _reuse(root: Path, params: dict) -> Path:
    """Return ``root`` when it holds the demo dataset described by ``params``; refuse anything else."""
    found = _read_manifest(root)
    if found == params:
        return root
    if found is not None:
        raise FileExistsError(
            f"{root} holds a demo dataset made with different parameters ({found}); remove it or choose another root"
        )
    if root.is_dir() and not any(root.iterdir()):  # an empty folder (e.g. made by hand): fill it
        with contextlib.suppress(OSError):  # another process may be filling it at the same moment
            root.rmdir()
        return write_demo_dataset(root, **{k: v for k, v in params.items() if k != "format"})
    raise FileExistsError(f"{root} exists and is not a demo dataset written by this bundle; refusing to overwrite it")


def _phantom(size: int, seed: int, diseased: bool, tries: int = 20):
    """The phantom of one image; a diseased one whose opacities all stay below the visibility threshold (a
    rare faint finding) is redrawn with a derived seed, so every diseased test image has a lesion to find."""
    phantom = make_phantom(size, seed=seed, diseased=diseased)
    k = 0
    while diseased and not phantom.lesion.any() and k < tries:
        k += 1
        phantom = make_phantom(size, seed=_image_seed(seed, 3, k), diseased=True)
    return phantom


def _write_into(folder: Path, params: dict) -> None:
    plan = _plan(params["n_train"], params["n_test_healthy"], params["n_test_diseased"], params["seed"])
    for rel, image_seed, diseased in tqdm(plan, desc="demo phantoms", unit="image", disable=None, leave=False):
        phantom = _phantom(params["size"], image_seed, diseased)
        write_png(folder / rel, phantom.image)
        if diseased:
            write_png(folder / "ground_truth" / "diseased" / Path(rel).name, phantom.lesion * np.uint8(255))
    with atomic_write(folder / "README.txt") as tmp:
        tmp.write_text(_README.format(params=json.dumps(params)))
    with atomic_write(folder / _MANIFEST) as tmp:  # written last: its presence marks a finished dataset
        tmp.write_text(json.dumps(params, indent=4) + "\n")


def demo_dataset_dir(bundle_root: str | os.PathLike) -> str:
    """The bundle's default dataset: ``<bundle_root>/data/demo``, written on first use.

    Used by the configs as ``"dataset_dir": "$bundle.data.demo_dataset_dir(@bundle_root)"``. Safe when
    several torchrun ranks call it at the same time.

    Args:
        bundle_root: the bundle's root folder.

    Returns:
        The absolute path of the demo dataset folder, as a string.
    """
    root = write_demo_dataset(Path(bundle_root) / DEMO_SUBDIR)
    logger.info("using synthetic demo data at %s (not real chest X-rays; set dataset_dir for your own data)", root)
    return str(root)


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(write_demo_dataset)
