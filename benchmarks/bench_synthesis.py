"""Texture anomaly synthesis side by side with the published ART-ASyn code: statistics and speed.

Runs the published synthesis (``ART_ASyn.random_anomaly`` from ``--reference DIR``, its own brush
``texture.jpg``) and ours (:func:`bundle.synthesis.texture.synthesize_texture_anomaly`, procedural brush unless
``--brush``) on the same 8-bit images and lung maps and prints, per method: mask area / lung area (q10 / median /
q90), mean brightening inside the mask,
total brightening per lung pixel, share of the brightening outside the mask, median number of mask
pieces (8-connected) and CPU time per anomaly (one core), with the targets checked against the
published figures of the same run:

- every statistic within 10 % of the published one (share outside the mask at most published + 1
  point; median pieces within 1);
- ours at least 50x faster than the published code, and <= 8 ms per anomaly at 256 px.

The images are the realistic phantoms of :func:`bundle.data.phantoms.make_phantom`, the kinds taken in
turn (``--kinds``, default ``pa,ap,child``: adult PA, adult AP portable, child; with breast shadows,
collimation, markers and rotation as the seed draws them), each with its exact lung map (the same map
for both methods; PBTSeg is not involved, so a segmentation error cannot make the methods differ). A
second table splits the statistics by kind (no targets: a third of the draws each).

Intensities are in [0, 1] (8-bit / 255). Brightening = anomalous - healthy image.

    python benchmarks/bench_synthesis.py [--reference ../shared/reference/art-asyn-published]
        [--draws 300] [--phantoms 6] [--kinds pa,ap,child] [--size 256] [--variants] [--montage PATH]

``--variants`` adds columns for ours with the published texture as brush (when the reference has one)
and without the empty-mask redraw, a table at 512 px for both (size scaling) and a run on an image
without lungs; the brush statistics (mean, coverage above a few levels, streak direction) of ours and
of the published texture come first (``--draws 0``: only those); ``--montage`` writes
the first draws of both side by side. Methods run interleaved draw by draw, so a changing machine load
affects them alike.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.data.phantoms import KINDS, make_phantom  # noqa: E402
from bundle.synthesis.statistics import anomaly_statistics, summarize_statistics
from bundle.synthesis.texture import synthesize_texture_anomaly
from bundle.synthesis.transforms import RandTextureAnomaly  # noqa: E402

DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "art-asyn-published"


@contextlib.contextmanager
def _inside(folder: Path):
    """The published code opens ``texture.jpg`` relative to the working directory."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def published_synthesis(reference: Path) -> Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """``f(image_u8, lung, seed) -> (anomalous float [0, 1], mask 0/1)`` calling the published code unchanged."""
    reference = Path(reference).resolve()
    if not (reference / "ART_ASyn.py").is_file():
        raise FileNotFoundError(
            f"--reference {reference}: no ART_ASyn.py there (a checkout of the published ART-ASyn code)"
        )
    sys.path.insert(0, str(reference))
    import ART_ASyn  # noqa: E402  (the published module, imported from --reference)
    from cxr_utils import CXRImage  # noqa: E402

    def run(image_u8: np.ndarray, lung: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        np.random.seed(seed)  # the published code draws from numpy's global generator
        with _inside(reference):
            anomaly, anomalous = ART_ASyn.random_anomaly(CXRImage(image_u8, lung_label=lung), image_u8, lung)
        out = np.asarray(anomalous)[..., 0].astype(np.float32) / 255.0
        mask = (np.asarray(anomaly)[..., 3] > 80).astype(np.uint8)  # the published mask rule
        return out, mask

    return run


def ours_synthesis(**kwargs) -> Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """``f(image_u8, lung, seed) -> (anomalous, mask)`` with
    :func:`bundle.synthesis.texture.synthesize_texture_anomaly`.

    Common random numbers: ours draws its per-lung stroke counts first, with the published
    distribution and one ``choice`` per lung, so a generator seeded like the published code's global one
    gives the same counts; the published code draws for lung label 2 first, so labels 1 and 2 are swapped
    for ours (the synthesis treats lungs alike). The stroke count dominates the anomaly size, so this
    removes most of the sampling noise from the comparison of the size quantiles.
    """
    synth = RandTextureAnomaly(prob=1.0, **kwargs)

    def run(image_u8: np.ndarray, lung: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        swapped = np.where(lung == 1, 2, np.where(lung == 2, 1, lung))
        out, mask, _ = synthesize_texture_anomaly(
            image_u8.astype(np.float32) / 255.0,
            swapped,
            np.random.RandomState(seed),
            synth.params,
            synth.brush,
            synth.max_attempts,
        )
        return out, mask

    return run


def measure(
    methods: dict[str, Callable], cases: list[tuple[np.ndarray, np.ndarray]], draws: int, seed0: int = 0
) -> dict[str, dict]:
    """Statistics (:func:`bundle.synthesis.texture.summarize_statistics`) and median CPU ms per anomaly of each method.

    Draw ``k`` runs every method on case ``k % len(cases)`` with seed ``seed0 + k``, one method after the
    other, so that a changing machine load affects all of them alike (the speed-up is a same-run ratio).
    Each method first runs one untimed warm-up draw (caches, imports).
    """
    for fn in methods.values():
        fn(*cases[0], seed0)
    per = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    first = {name: [] for name in methods}
    for k in range(draws):
        image_u8, lung = cases[k % len(cases)]
        image = image_u8.astype(np.float32) / 255.0
        for name, fn in methods.items():
            t0 = time.process_time()
            out, mask = fn(image_u8, lung, seed0 + k)
            cpu[name].append(time.process_time() - t0)
            per[name].append(anomaly_statistics(image, np.asarray(out), np.asarray(mask), lung))
            if k < len(cases):
                first[name].append((image, np.asarray(out), np.asarray(mask), lung))
    result = {}
    for name in methods:
        result[name] = summarize_statistics(per[name])
        result[name]["ms"] = 1e3 * float(np.median(cpu[name]))
        result[name]["first"] = first[name]
        result[name]["per"] = per[name]
    return result


ROWS = (
    ("area / lung q10", "area_q10", "{:.3f}"),
    ("area / lung median", "area_median", "{:.3f}"),
    ("area / lung q90", "area_q90", "{:.3f}"),
    ("mean brightening in mask", "mean_in_mask", "{:.3f}"),
    ("brightening per lung pixel", "per_lung_pixel", "{:.3f}"),
    ("share outside the mask", "outside_share", "{:.1%}"),
    ("median mask pieces", "pieces_median", "{:.1f}"),
    ("empty masks", "empty", "{:.0f}"),
    ("CPU ms per anomaly", "ms", "{:.1f}"),
)


def check(name: str, ours: float, published: float) -> str:
    """The issue's bound for one statistic: '' when it has none."""
    if name == "outside_share":
        return "ok" if ours <= published + 0.01 else "MISS"
    if name == "pieces_median":
        return "ok" if abs(ours - published) <= 1 else "MISS"
    if name in ("empty", "ms"):
        return ""
    return "ok" if abs(ours - published) <= 0.1 * abs(published) else "MISS"


def print_table(columns: dict[str, dict], reference: str | None, rows: tuple = ROWS) -> bool:
    names = list(columns)
    print(
        f"{'statistic':28s}"
        + "".join(f"{n:>16s}" for n in names)
        + ("   target (ours vs published)" if reference else "")
    )
    ok = True
    for label, key, fmt in rows:
        line = f"{label:28s}" + "".join(f"{fmt.format(columns[n][key]):>16s}" for n in names)
        if reference:
            verdict = check(key, columns["ours"][key], columns[reference][key])
            ok &= verdict != "MISS"
            line += f"   {verdict}"
        print(line)
    return ok


def print_kind_table(columns: dict[str, dict], kinds: list[str], n_cases: int) -> None:
    """The statistics of each method split by phantom kind (draw ``k`` used case ``k % n_cases``)."""
    by_kind = {}
    for kind in dict.fromkeys(kinds):
        for name, col in columns.items():
            draws = [s for k, s in enumerate(col["per"]) if kinds[k % n_cases] == kind]
            by_kind[f"{name} {kind}"] = {**summarize_statistics(draws), "n": len(draws)}
    print_table(by_kind, None, rows=(("draws", "n", "{:.0f}"),) + ROWS[:-1])


def write_montage(path: Path, published: list, ours: list, columns: int, kinds: list[str] | None = None) -> None:
    """Rows: image, published anomalous, ours anomalous, published brightening, ours brightening (same images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(columns, len(published), len(ours))
    rows = ("healthy (synthetic phantom)", "published", "ours", "published: brightening", "ours: brightening")
    fig, axes = plt.subplots(len(rows), n, figsize=(2.1 * n, 2.2 * len(rows)), squeeze=False)
    vmax = max(float((o - i).max()) for i, o, *_ in published[:n] + ours[:n]) or 1.0
    for j in range(n):
        img, pout, pmask, lung = published[j]
        _, oout, omask, _ = ours[j]
        panels = ((img, None), (pout, pmask), (oout, omask), (pout - img, pmask), (oout - img, omask))
        for i, (panel, mask) in enumerate(panels):
            ax = axes[i, j]
            diff = i >= 3
            ax.imshow(panel, cmap="magma" if diff else "gray", vmin=0, vmax=vmax if diff else 1)
            if mask is not None and diff:
                ax.contour(mask > 0, levels=[0.5], colors="cyan", linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(rows[i], fontsize=7)
        if kinds:
            axes[0, j].set_title(
                {"pa": "adult PA", "ap": "adult AP portable", "child": "child"}.get(kinds[j], kinds[j]), fontsize=7
            )
    fig.suptitle(
        "ART-ASyn anomalies, published code vs ours, same synthetic phantoms and lung maps "
        "(brightening = anomalous - healthy; cyan: mask)",
        fontsize=8,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def streak_angle(tex: np.ndarray) -> float:
    """Dominant direction of a texture's structures, degrees rising to the right (gradient structure tensor)."""
    from scipy import ndimage as ndi

    t = ndi.gaussian_filter(np.asarray(tex, np.float64), 1.0)
    gy, gx = ndi.sobel(t, 0), ndi.sobel(t, 1)
    jxx, jyy, jxy = (ndi.gaussian_filter(g, 3.0).sum() for g in (gx * gx, gy * gy, gx * gy))
    direction = (0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy)) + 90.0) % 180.0  # rows point down
    return float(180.0 - direction if direction > 90.0 else -direction)


def print_brush_statistics(reference: Path | None, brush: str | None) -> None:
    """Mean, coverage above a few levels and streak direction of our brush and the published texture."""
    from bundle.synthesis.brush import load_brush, procedural_brush

    textures = {
        "ours (procedural)" if brush is None else "ours (--brush)": procedural_brush()
        if brush is None
        else load_brush(brush)
    }
    if reference is not None and (reference / "texture.jpg").is_file():
        textures["published texture.jpg"] = load_brush(reference / "texture.jpg")
    levels = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
    print(f"{'brush':24s} {'size':>8s} {'mean':>6s}  " + " ".join(f">{lv:<5}" for lv in levels) + "  streak angle")
    for name, tex in textures.items():
        cover = " ".join(f"{(tex > lv).mean():6.3f}" for lv in levels)
        print(
            f"{name:24s} {tex.shape[1]:>4d}x{tex.shape[0]:<3d} {tex.mean():6.3f}  {cover}  {streak_angle(tex):5.1f} deg"
        )


def no_lung_check(reference: Path, seconds: float = 3.0) -> None:
    """Both methods on an image without lungs: ours returns at once; the published code redraws forever."""
    import threading

    image = np.full((256, 256), 128, np.uint8)
    lung = np.zeros((256, 256), np.uint8)
    out, mask, info = synthesize_texture_anomaly(image / 255.0, lung, np.random.RandomState(0))
    print(f"no lung, ours: {'no anomaly' if not mask.any() else 'anomaly'} (reason {info['reason']!r})")
    published = published_synthesis(reference)
    worker = threading.Thread(target=published, args=(image, lung, 0), daemon=True)  # left running until exit
    worker.start()
    worker.join(seconds)
    print(
        "no lung, published: "
        + (f"still running after {seconds:.0f} s (endless redraw loop)" if worker.is_alive() else "returned")
    )


def phantom_cases(
    n: int, size: int, kinds: tuple[str, ...] = KINDS
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """``n`` 8-bit phantom images (seeds 0..n-1, kinds in turn) with their exact lung maps, and their kinds.

    The published code wants uint8 images and a {0, 1, 2} lung map.
    """
    cases, names = [], []
    for seed in range(n):
        kind = kinds[seed % len(kinds)]
        ph = make_phantom(size, seed=seed, kind=kind)
        if not ph.lung.any():
            raise RuntimeError(f"phantom seed {seed} ({kind}, {size} px) has no lung")
        cases.append((np.clip(np.rint(ph.image * 255), 0, 255).astype(np.uint8), ph.lung.astype(np.uint8)))
        names.append(kind)
    return cases, names


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise SystemExit(f"--kinds {text!r}: expected a comma-separated list of {', '.join(KINDS)}")
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--reference", default=str(DEFAULT_REFERENCE), help="folder of the published ART-ASyn code ('' to skip it)"
    )
    ap.add_argument("--draws", type=int, default=300, help="anomalies per method (0: brush statistics only)")
    ap.add_argument("--phantoms", type=int, default=6, help="number of phantoms (seeds 0..N-1)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="phantom kinds taken in turn, from: " + ", ".join(KINDS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--brush", default=None, help="brush texture file for ours (default: procedural)")
    ap.add_argument(
        "--variants", action="store_true", help="also: ours with the published texture, without redraws, and 512 px"
    )
    ap.add_argument(
        "--montage",
        default=None,
        help="write a published-vs-ours montage here (e.g. docs/images/synthesis_published_vs_ours.png)",
    )
    ap.add_argument("--columns", type=int, default=6)
    args = ap.parse_args()

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    print(
        f"one core (OMP {os.environ['OMP_NUM_THREADS']}); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    reference = Path(args.reference) if args.reference else None
    kinds = parse_kinds(args.kinds)
    print_brush_statistics(reference, args.brush)
    if args.draws <= 0:
        return
    cases, case_kinds = phantom_cases(args.phantoms, args.size, kinds)
    mix = ", ".join(f"{case_kinds.count(k)} {k}" for k in dict.fromkeys(case_kinds))
    print(
        f"{args.draws} draws on {args.phantoms} synthetic phantoms ({mix}) at {args.size} px "
        f"(exact phantom lung maps), seeds {args.seed}..{args.seed + args.draws - 1}"
    )
    methods: dict[str, Callable] = {}
    if reference is not None:
        methods["published"] = published_synthesis(reference)
    methods["ours"] = ours_synthesis(brush=args.brush)
    if args.variants:
        texture = reference / "texture.jpg" if reference is not None else None
        if texture is not None and texture.is_file():
            methods["ours+pub.tex"] = ours_synthesis(brush=str(texture))
        methods["ours no redraw"] = ours_synthesis(brush=args.brush, max_attempts=1)
    columns = measure(methods, cases, args.draws, args.seed)
    ok = print_table(columns, "published" if reference is not None else None)
    if reference is not None:
        ratio = columns["published"]["ms"] / columns["ours"]["ms"]
        speed_ok = ratio >= 50 and columns["ours"]["ms"] <= 8 * (args.size / 256) ** 2
        print(
            f"speed-up {ratio:.1f}x (target >= 50x); ours {columns['ours']['ms']:.1f} ms (target <= 8 ms at 256 px)"
            f"   {'ok' if speed_ok else 'MISS'}"
        )
        print(f"all statistics within bounds: {'yes' if ok else 'NO'}")
    if len(set(case_kinds)) > 1:
        print("\nby phantom kind (no targets)")
        print_kind_table({n: columns[n] for n in columns if n in ("published", "ours")}, case_kinds, len(cases))
    if args.variants and args.size == 256:
        big, big_kinds = phantom_cases(min(args.phantoms, 4), 512, kinds)
        n_big = max(8, args.draws // 4)
        print(f"\nsize scaling: {n_big} draws on {len(big)} phantoms ({', '.join(big_kinds)}) at 512 px")
        big_methods = {"ours": ours_synthesis(brush=args.brush)}
        if reference is not None:
            big_methods = {"published": published_synthesis(reference), **big_methods}
        big_cols = measure(big_methods, big, n_big, args.seed)
        print_table(big_cols, None)
    if args.montage and reference is not None:
        write_montage(
            Path(args.montage), columns["published"]["first"], columns["ours"]["first"], args.columns, case_kinds
        )
        print(f"montage: {args.montage}")
    if args.variants and reference is not None:
        print()  # last: the published code's loop keeps a thread busy until exit
        no_lung_check(reference)


if __name__ == "__main__":
    main()
