"""PBTSeg speed on one CPU core: bundle.lungs.pbtseg against a published-style baseline, side by side.

Target: <= 5 ms per 256x256 image (the published Python implementation takes about 45 ms) and a cost that grows
no worse than linearly with the pixel count.

The baseline re-implements the published procedure as described in ALGORITHM.md section 1: the image in 8-bit,
fixed thresholds t = 50, 55, ..., 160, at each threshold a fresh connected-component labelling
(``skimage.measure.label``) and region properties with a convex hull per area-qualifying component (solidity,
hull perimeter on the border), the two largest qualifying components assigned to a side, early stop above
t = 130, holes filled at the end. Its pixel areas are scaled with the image (2000..10000 px at 256x256) so that it
does the same work at every size; otherwise it would find nothing above 256 px and stop early.

Run: ``python benchmarks/bench_pbtseg.py [--repeats 5] [--images 4] [--sizes 256 512 1024]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.spatial import ConvexHull, QhullError  # noqa: E402
from skimage.measure import label as sk_label  # noqa: E402
from skimage.measure import regionprops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data.phantoms import make_phantom  # noqa: E402
from bundle.lungs import pbtseg  # noqa: E402


def published_style(image: np.ndarray) -> np.ndarray:
    """The published PBTSeg procedure (fixed 8-bit thresholds, full recomputation per level), for timing."""
    img = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    h, w = img.shape
    scale = h * w / (256.0 * 256.0)
    a_min, a_max = 2000 * scale, 10000 * scale
    best = {1: (0, None), 2: (0, None)}
    for t in range(50, 161, 5):
        lab = sk_label(img <= t, connectivity=1)
        good = []
        for r in regionprops(lab):
            if not a_min < r.area < a_max:
                continue
            r0, c0, r1, c1 = r.bbox
            if r1 - r0 <= c1 - c0:
                continue
            cy, cx = r.centroid
            if not (h / 6 < cy < 5 * h / 6 and w / 6 < cx < 5 * w / 6):
                continue
            if r.solidity <= 0.6:  # skimage computes the component's convex hull image here
                continue
            pts = np.concatenate([r.coords, r.coords + [1, 0], r.coords + [0, 1], r.coords + [1, 1]]).astype(float)
            try:
                hull = ConvexHull(pts)
            except QhullError:
                continue
            v = pts[hull.vertices]
            e1 = np.roll(v, -1, axis=0)
            on = ((v[:, 0] == 0) & (e1[:, 0] == 0)) | ((v[:, 0] == h) & (e1[:, 0] == h)) | (
                (v[:, 1] == 0) & (e1[:, 1] == 0)) | ((v[:, 1] == w) & (e1[:, 1] == w))
            if np.hypot(*(e1 - v)[on].T).sum() >= 0.15 * hull.area:
                continue
            good.append(r)
        if not good and t > 130:
            break
        for r in sorted(good, key=lambda g: -g.area)[:2]:
            if r.bbox[1] < w / 3 and r.area > best[1][0]:
                best[1] = (r.area, lab == r.label)
            elif r.bbox[3] > 2 * w / 3 and r.area > best[2][0]:
                best[2] = (r.area, lab == r.label)
    out = np.zeros((h, w), np.uint8)
    for side in (1, 2):
        if best[side][1] is not None:
            out[ndimage.binary_fill_holes(best[side][1]) & (out == 0)] = side
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def _median_ms(fn, images, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds per call; CPU time is less disturbed by other processes on the core."""
    wall, cpu = [], []
    for _ in range(repeats):
        for img in images:
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(img)
            cpu.append((time.thread_time() - c0) * 1000.0)
            wall.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(wall), statistics.median(cpu)


def _reference_ms() -> float:
    """This machine's speed in one number: CPU ms of one scipy labelling of a 128x128 random mask."""
    mask = np.random.default_rng(0).random((128, 128)) < 0.45
    c0 = time.thread_time()
    for _ in range(200):
        ndimage.label(mask)
    return (time.thread_time() - c0) * 1000.0 / 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--images", type=int, default=4, help="phantoms per size")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the phantoms")
    parser.add_argument("--baseline-repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"PBTSeg on one CPU core (torch threads {torch.get_num_threads()}, OMP/MKL threads 1); "
          f"{args.images} phantoms x {args.repeats} passes per size; median ms per image\n")
    header = (f"{'size':>6} {'ours ms':>8} {'ours cpu':>9} {'cpu/Mpx':>8} {'base ms':>9} {'base cpu':>9} "
              f"{'speed-up':>9} {'Dice ours':>10} {'Dice base':>10}")
    print(header)
    print("-" * len(header))
    rows = []
    for size in args.sizes:
        phantoms = [make_phantom(size, seed=100 + i) for i in range(args.images)]
        images = [p.image for p in phantoms]
        for img in images:  # warm-up (imports, caches)
            pbtseg(img)
        ours, ours_cpu = _median_ms(lambda x: pbtseg(x), images, args.repeats)
        base, base_cpu = _median_ms(published_style, images, args.baseline_repeats)
        d_ours = np.mean([_dice(pbtseg(p.image)[0] == k, p.lung == k) for p in phantoms for k in (1, 2)])
        d_base = np.mean([_dice(published_style(p.image) == k, p.lung == k) for p in phantoms for k in (1, 2)])
        mpx = size * size / 1e6
        rows.append((size, ours_cpu, base_cpu))
        print(f"{size:>6} {ours:>8.2f} {ours_cpu:>9.2f} {ours_cpu / mpx:>8.1f} {base:>9.1f} {base_cpu:>9.1f} "
              f"{base_cpu / ours_cpu:>8.1f}x {d_ours:>10.3f} {d_base:>10.3f}")
    if len(rows) > 1:
        (s0, t0, _), (s1, t1, _) = rows[0], rows[-1]
        print(f"\ncost growth {s0}->{s1} px: x{t1 / t0:.1f} CPU time for x{(s1 / s0) ** 2:.0f} pixels "
              f"({'linear or better' if t1 / t0 <= 1.1 * (s1 / s0) ** 2 else 'super-linear'})")
    ref = _reference_ms()
    print(f"machine reference: one 128x128 scipy.ndimage.label = {ref:.3f} ms CPU "
          f"(about 0.1 ms on an idle modern core; scale the figures accordingly)")
    print("target: <= 5 ms per 256x256 image (published Python: about 45 ms)")


if __name__ == "__main__":
    main()
