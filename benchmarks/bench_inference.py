"""Inference speed and memory: per-image latency, batch throughput, and streaming evidence.

Prints, on CPU:

1. latency per 256x256 image (network forward + error map + score + mask), median of repeated runs, with
   1 and 2 torch threads;
2. throughput (images/s) of the same for batch sizes 1, 4, 8, 16;
3. the peak resident memory (RSS) of complete ``python -m monai.bundle run`` inference runs over a
   folder of 100 and of 1,000 256x256 PNG images (masks, error maps, overlays and tables written), and
   their wall time per image. Streaming means the two peaks are about equal.

Usage::

    python benchmarks/bench_inference.py [--sizes 100 1000] [--repeats 20] [--threads 2] [--skip_folder]

The weights are a freshly initialised ``network_def`` (speed and memory do not depend on their values).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "inference.json"
META = ROOT / "configs" / "metadata.json"


def _network() -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    return parser.get_parsed_content("network_def").eval()


def _step(net: torch.nn.Module, batch: torch.Tensor) -> None:
    from bundle.evaluation.postprocess import anomaly_mask, error_map, image_score

    with torch.inference_mode():
        recon = net(batch).clamp(0, 1)
        error = error_map(batch, recon)
        for i in range(batch.shape[0]):
            image_score(error[i])
        anomaly_mask(batch, recon)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(repeats: int, threads_for_batches: int) -> None:
    net = _network()
    image = torch.rand(1, 1, 256, 256)
    print("1. latency per 256x256 image (UNet forward + error map + score + mask), CPU")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t = _median_seconds(lambda: _step(net, image), repeats)
        print(f"   {threads} thread(s): {t * 1000:7.1f} ms/image")
    torch.set_num_threads(threads_for_batches)
    print(f"2. batch throughput, {threads_for_batches} thread(s)")
    for bs in (1, 4, 8, 16):
        batch = torch.rand(bs, 1, 256, 256)
        t = _median_seconds(lambda batch=batch: _step(net, batch), max(3, repeats // bs))
        print(f"   batch {bs:2d}: {bs / t:7.1f} images/s ({t * 1000 / bs:6.1f} ms/image)")


def _write_folder(folder: Path, n: int, pool: list[Path]) -> None:
    for i in range(n):
        sub = folder / f"part{i // 250:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pool[i % len(pool)], sub / f"cxr_{i:05d}.png")


def _peak_rss_run(cmd: list[str]) -> tuple[int, float, int]:
    """Run ``cmd`` inside a small wrapper that reports its child's peak RSS (kB) alone."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, rc)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True, cwd=ROOT)
    rss, seconds, rc = out.stdout.split()
    return int(rss), float(seconds), int(rc)


def bench_folder(sizes: list[int]) -> None:
    from PIL import Image

    from bundle.data.phantoms import make_phantom

    threads = os.environ["OMP_NUM_THREADS"]
    print(
        f"3. complete inference runs (python -m monai.bundle run, CPU, {threads} thread(s), batch 4, "
        "all outputs written)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(_network().state_dict(), tmp / "model.pt")
        pool = []
        for seed in range(50):
            path = tmp / "pool" / f"{seed}.png"
            path.parent.mkdir(exist_ok=True)
            image = make_phantom(256, seed=seed, diseased=seed % 2 == 1).image
            Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(path)
            pool.append(path)
        for n in sizes:
            folder, out = tmp / f"in{n}", tmp / f"out{n}"
            _write_folder(folder, n, pool)
            cmd = [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                str(CONFIG),
                "--meta_file",
                str(META),
                "--dataset_dir",
                str(folder),
                "--output_dir",
                str(out),
                "--ckpt_path",
                str(tmp / "model.pt"),
                "--threshold_path",
                str(tmp / "none.json"),
            ]
            rss, seconds, rc = _peak_rss_run(cmd)
            written = len(list(out.rglob("*_mask.png")))
            print(
                f"   {n:5d} images: peak RSS {rss / 1024:7.1f} MiB, {seconds:7.1f} s "
                f"({seconds / n * 1000:6.1f} ms/image incl. start-up), {written} masks, exit {rc}"
            )
            shutil.rmtree(folder)
            shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="folder sizes for the RSS runs")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions for the latency figures")
    parser.add_argument("--skip_folder", action="store_true", help="skip the complete-run memory benchmark")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the throughput and folder runs")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the bundle runs started below
    print(f"torch {torch.__version__}, CPU, {os.cpu_count()} logical cores")
    bench_model(args.repeats, args.threads)
    if not args.skip_folder:
        bench_folder(args.sizes)


if __name__ == "__main__":
    main()
