"""Throughput of the online training input pipeline on one CPU core.

256x256 PNG phantoms with cached lung maps (as ``monai.bundle run lungs`` writes them) go through
``LoadCXRd -> PBTSegd (cache hit) -> RandTextureAnomalyd -> DataLoader collation`` in this process
(num_workers=0, one torch thread); prints images per second (CPU time and wall time). Target: >= 60
images/s per core, so a few DataLoader workers keep a GPU fed with on-the-fly anomalies.

    python benchmarks/bench_input_pipeline.py [--images 32] [--epochs 3] [--batch-size 8]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from monai.data import DataLoader, Dataset, list_data_collate  # noqa: E402
from monai.transforms import Compose, EnsureTyped  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data.phantoms import make_phantom  # noqa: E402
from bundle.io import LoadCXRd, write_png  # noqa: E402
from bundle.lungs.cache import lung_cache_path
from bundle.lungs.transforms import PBTSegd  # noqa: E402
from bundle.synthesis.transforms import RandTextureAnomalyd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = []
        for k in range(args.images):
            ph = make_phantom(args.size, seed=k)
            path = root / "train" / "healthy" / f"img{k:04d}.png"
            write_png(path, ph.image, bits=16)
            write_png(lung_cache_path(path, root, root / "lungs"), ph.lung)
            data.append({"image": str(path)})
        pipeline = Compose(
            [
                LoadCXRd(keys="image"),
                PBTSegd(keys="image", lung_key="lung", cache_dir=root / "lungs", dataset_dir=root),
                EnsureTyped(keys=["image", "lung"], track_meta=False),
                RandTextureAnomalyd(keys="image", lung_key="lung", prob=1.0),
            ]
        )
        pipeline.set_random_state(0)
        loader = DataLoader(
            Dataset(data, pipeline),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=0,
            collate_fn=list_data_collate,
        )
        next(iter(loader))  # warm-up: builds the stamp bank once per process
        n, c0, w0 = 0, time.process_time(), time.perf_counter()
        for _ in range(args.epochs):
            for batch in loader:
                n += batch["image"].shape[0]
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert batch["anomaly_mask"].shape == batch["image"].shape == batch["target"].shape
    print(
        f"{n} images of {args.size}x{args.size} (load PNG, cached lung map, anomaly, collate) on one core; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{n / cpu:.1f} images/s (CPU time), {n / wall:.1f} images/s (wall); target >= 60 images/s per core")


if __name__ == "__main__":
    main()
