"""Speed of the texture anomaly synthesis on one CPU core, against a published-style baseline.

Prints the median milliseconds per anomaly (CPU time of this process, and wall time) at 256, 512 and
1024 px for :func:`bundle.synthesis.synthesize_texture_anomaly`, and, at 256 px in the same run, for
``baseline_anomaly``: a straightforward re-implementation of the published approach (every stamp
resampled with ``scipy.ndimage.zoom``/``rotate`` and composited one by one, each stroke on its own layer,
a Python loop over the 500 Voronoi cells, full-resolution blurs). Target: <= 10 ms at 256 px.

    python benchmarks/bench_synthesis.py [--draws 60] [--baseline-draws 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.brush import procedural_brush  # noqa: E402
from bundle.data.phantoms import make_phantom  # noqa: E402
from bundle.synthesis import DEFAULT_PARAMS, synthesize_texture_anomaly  # noqa: E402


def baseline_anomaly(image: np.ndarray, lung: np.ndarray, rng: np.random.RandomState, texture: np.ndarray) -> tuple:
    """The published approach, written plainly (same parameters, same pixel scaling)."""
    p = DEFAULT_PARAMS
    h, w = image.shape
    s = np.sqrt(h * w) / p.reference_size
    grey = np.percentile(image, p.grey_percentile)
    labels = [v for v in (1, 2) if (lung == v).any()]
    counts = [0] * len(labels)
    for _ in range(100):
        counts = [0 if rng.rand() < p.zero_stroke_prob else int(rng.choice(p.stroke_counts[1:])) for _ in labels]
        if sum(counts):
            break
    a = np.zeros((h, w))
    for label, n in zip(labels, counts):
        pts = np.argwhere(lung == label)
        for _ in range(n):
            p0, p2 = pts[rng.randint(len(pts))].astype(float), pts[rng.randint(len(pts))].astype(float)
            p1 = (p0 + p2) / 2 + rng.uniform(-p.control_offset * s, p.control_offset * s, 2)
            t = np.linspace(0, 1, p.curve_samples)[:, None]
            curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
            length = np.linalg.norm(np.diff(curve, axis=0), axis=1).sum()
            for width in p.brush_widths:
                width *= s
                layer = np.zeros((h, w))
                for _ in range(max(1, int(length / (p.stamp_spacing * width)))):
                    cy, cx = curve[rng.randint(p.curve_samples)]
                    size = rng.uniform(p.min_width_fraction * width, width)
                    stamp = ndi.zoom(texture, size / texture.shape[1], order=1)
                    stamp = ndi.rotate(stamp, rng.uniform(0, 360), order=1)
                    alpha = np.clip(stamp, 0, 1) * rng.uniform(*p.opacity_range) * rng.uniform(*p.flow_range)
                    y0, x0 = int(cy) - alpha.shape[0] // 2, int(cx) - alpha.shape[1] // 2
                    ya, xa = max(y0, 0), max(x0, 0)
                    yb, xb = min(y0 + alpha.shape[0], h), min(x0 + alpha.shape[1], w)
                    if ya >= yb or xa >= xb:
                        continue
                    src = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0]
                    layer[ya:yb, xa:xb] = src + layer[ya:yb, xa:xb] * (1 - src)
                layer *= p.layer_alpha
                a = layer + a * (1 - layer)
    b = ndi.gaussian_filter(a, p.blur_radius * s) * p.blur_alpha
    seeds = np.stack([rng.randint(0, h, p.crystal_seeds), rng.randint(0, w, p.crystal_seeds)], 1)
    cells = cKDTree(seeds).query(np.argwhere(np.ones((h, w), bool)))[1].reshape(h, w)
    c = np.zeros_like(a)
    for i in range(p.crystal_seeds):
        inside = cells == i
        if inside.any():
            c[inside] = a[inside].mean()
    d = ndi.gaussian_filter(c, p.crystal_blur_radius * s) * p.crystal_blur_alpha
    c = c * p.crystal_alpha
    alpha = a
    for layer in (b, c, d, c, b):
        alpha = layer + alpha * (1 - layer)
    k = int(round((p.lung_dilation - 1) / 2 * s)) * 2 + 1
    soft = ndi.binary_dilation(lung > 0, np.ones((k, k), bool)).astype(float)
    ks = p.lung_blur * s
    soft = ndi.gaussian_filter(soft, 0.3 * ((ks - 1) * 0.5 - 1) + 0.8, truncate=3.0)
    alpha = np.clip(alpha * soft * (p.rib_weight * image + 1 - p.rib_weight) * p.alpha_gain, 0, 1)
    out = np.maximum(image * (1 - alpha) + grey * alpha, image)
    return out.astype(np.float32), (alpha > p.mask_threshold).astype(np.uint8)


def timed(fn, inputs, draws: int) -> tuple[float, float, np.ndarray]:
    """Median CPU and wall milliseconds of ``fn(image, lung, rng)`` over ``draws`` calls (after one warm-up),
    and per draw (mask area / lung area, mean intensity increase in the mask)."""
    rng = np.random.RandomState(0)
    fn(*inputs[0], rng)
    cpu, wall, stats = [], [], []
    for k in range(draws):
        image, lung = inputs[k % len(inputs)]
        c0, w0 = time.process_time(), time.perf_counter()
        out, mask, *_ = fn(image, lung, rng)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        inside = mask > 0
        stats.append((inside.sum() / (lung > 0).sum(), float((out - image)[inside].mean()) if inside.any() else 0.0))
    return 1e3 * float(np.median(cpu)), 1e3 * float(np.median(wall)), np.asarray(stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=60, help="anomalies timed per size (fewer at 1024)")
    ap.add_argument("--baseline-draws", type=int, default=24)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"one core (torch threads {torch.get_num_threads()}, OMP {os.environ['OMP_NUM_THREADS']}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'size':>6} {'ours cpu ms':>12} {'ours wall ms':>13}")
    ours = {}
    for size in args.sizes:
        inputs = [(ph.image, ph.lung) for ph in (make_phantom(size, seed=k) for k in range(4))]
        draws = max(5, args.draws * 256 * 256 // (size * size) * 2) if size > 256 else args.draws
        ours[size] = timed(synthesize_texture_anomaly, inputs, draws)
        print(f"{size:>6} {ours[size][0]:>12.2f} {ours[size][1]:>13.2f}")
    if args.baseline_draws > 0:
        texture = procedural_brush()
        inputs = [(ph.image, ph.lung) for ph in (make_phantom(256, seed=k) for k in range(4))]
        base = timed(lambda i, l, r: baseline_anomaly(i, l, r, texture), inputs, args.baseline_draws)
        mine = ours.get(256) or timed(synthesize_texture_anomaly, inputs, args.draws)
        print(f"baseline (published-style) at 256: {base[0]:.1f} ms cpu, {base[1]:.1f} ms wall")
        print(f"speed-up at 256: {base[0] / mine[0]:.1f}x (cpu), {base[1] / mine[1]:.1f}x (wall); target <= 10 ms per anomaly")
        for name, st in (("ours", mine[2]), ("baseline", base[2])):
            print(f"  {name:8s} ({len(st)} draws): median area / lung {np.median(st[:, 0]):.2f}, "
                  f"median mean increase in mask {np.median(st[:, 1]):.3f}")


if __name__ == "__main__":
    main()
