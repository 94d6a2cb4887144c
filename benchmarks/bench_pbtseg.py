"""PBTSeg side by side with the published PBTSeg: speed on one CPU core and Dice by lung zone on hard phantoms.

The published code is imported from ``--reference DIR`` (default ``../shared/reference/art-asyn-published`` relative
to the repository root; point it at your own clone of the published repository). It is run as published: the
8-bit image resized to 256 x 256, fixed thresholds; its map is resized back (nearest) for scoring. Both run on the
same phantoms (``bundle.data.phantoms``, healthy and diseased), the storage cycling over float, gamma 0.6 / 1.6 and
8 / 12 / 16-bit. Dice is per lung and per zone (upper / middle / lower third of the true lung's rows).

Speed target: <= 6 ms per 256 px image on one core (our PBTSeg). Figures measured on a loaded machine are
pessimistic; the ratio of the two, measured in one run, is the robust figure.

``--baseline FILE`` also times another version of ``bundle/lungs/pbtseg.py`` (``bundle/lungs.py`` before the package
layout) against ours, interleaved on the same images
(fastest of ``--repeats`` runs per image), and counts the images whose maps differ: how a speed-up is checked.

``--params JSON`` runs our PBTSeg with changed ``PBTSegParams`` fields (e.g. ``'{"edge_step": 0.02}'``), so a
parameter change is measured in the same run against the published code and, with ``--baseline``, the default version.
``--steps`` prints the CPU time of each step function of ``pbtseg()`` (where the time goes); ``--list-below 0.85``
lists each of our lungs below that Dice (which films fail, at which size).

Run: ``python benchmarks/bench_pbtseg.py [--reference DIR] [--seeds 40] [--sizes 256 512 1024] [--repeats 3]
[--baseline FILE] [--params JSON] [--steps] [--first-seed 0] [--list-below DICE]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.data.phantoms import STORAGE_VARIANTS as VARIANTS  # noqa: E402
from bundle.data.phantoms import as_stored as variant  # noqa: E402
from bundle.data.phantoms import make_phantom  # noqa: E402
from bundle.evaluation.lung_dice import dice_table, labels_swapped, zone_dice  # noqa: E402
from bundle.lungs.pbtseg import CORE_ONLY, PBTSegParams, pbtseg  # noqa: E402

#: the step functions of ``bundle/lungs/pbtseg.py`` in the order ``pbtseg()`` calls them (``--steps`` times each)
STEPS = (
    "_make_grid",
    "_rank_grid",
    "_search",
    "_zone_correction",
    "_cut_necks",
    "_edge_level",
    "_pieces",
    "_refine",
    "_remove_spurs",
    "_diaphragm_step",
    "_hull_step",
    "_dome_step",
    "_partner_floor",
    "_mirror_step",
    "_is_chest",
    "_medial_fill",
)


def time_steps(seeds: int, params: dict) -> None:
    """CPU time of each step function of our PBTSeg on the 256 px phantoms (healthy and diseased), in ms per image.

    Each step is wrapped in a timer for the run (the wrappers add a little time of their own). Times are inclusive:
    ``_search`` counts both searches, one of which also counts in ``_zone_correction``."""
    import bundle.lungs.pbtseg as module

    images = [
        variant(make_phantom(256, seed=s, diseased=d).image, VARIANTS[s % len(VARIANTS)])
        for s in range(seeds)
        for d in (False, True)
    ]
    spent = dict.fromkeys(STEPS, 0.0)
    originals = {name: getattr(module, name) for name in STEPS}

    def timer(name: str, fn):
        def timed_fn(*a, **k):
            c0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.thread_time() - c0

        return timed_fn

    try:
        for name, fn in originals.items():
            setattr(module, name, timer(name, fn))
        c0 = time.thread_time()
        for img in images:
            module.pbtseg(img, **params)
        total = time.thread_time() - c0
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)
    n = len(images)
    print(f"Steps of our PBTSeg, CPU ms per image ({n} phantoms at 256 px; inclusive; total {1000 * total / n:.2f} ms)")
    for name in STEPS:
        print(f"  {name:<18} {1000 * spent[name] / n:>6.2f} ms {100 * spent[name] / total:>5.1f} %")
    print()


def load_published(reference: Path):
    """The published ``lung_segmentation`` (its folder goes on sys.path, as its scripts import each other)."""
    if not (reference / "PBTSeg.py").is_file():
        raise SystemExit(f"--reference {reference}: no PBTSeg.py there (a clone of the published ART-ASyn code)")
    sys.path.insert(0, str(reference))
    return importlib.import_module("PBTSeg").lung_segmentation


def published_map(seg, image: np.ndarray) -> np.ndarray:
    """Published pipeline: min-max to 8-bit, resize to 256 x 256, segment, labels back to the image size."""
    a = image.astype(np.float64)
    a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    small = np.asarray(Image.fromarray(np.rint(a * 255).astype(np.uint8)).resize((256, 256), Image.BILINEAR))
    right, left = seg(small)
    lab = np.zeros((256, 256), np.uint8)
    lab[right.astype(bool)] = 1
    lab[left.astype(bool)] = 2
    return np.asarray(Image.fromarray(lab).resize(image.shape[::-1], Image.NEAREST))


def timed(fn, images, repeats: int) -> float:
    """Median CPU milliseconds per call (CPU time is less disturbed by other processes than wall time)."""
    cpu = []
    for _ in range(repeats):
        for img in images:
            c0 = time.thread_time()
            fn(img)
            cpu.append((time.thread_time() - c0) * 1000.0)
    return statistics.median(cpu)


def load_baseline(path: Path):
    """``pbtseg`` from another version of ``bundle/lungs/pbtseg.py`` (loaded as a separate module)."""
    if not path.is_file():
        raise SystemExit(f"--baseline {path}: no such file (a copy of another version of bundle/lungs/pbtseg.py)")
    spec = importlib.util.spec_from_file_location("pbtseg_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module.pbtseg


def compare_baseline(path: Path, seeds: int, repeats: int, params: dict) -> None:
    """Ours against a baseline version on the same 256 px phantoms (healthy and diseased): per image the fastest of
    ``repeats`` interleaved runs (interleaving and the minimum cancel most of the load of a shared machine), and
    the number of images whose label maps differ."""
    base = load_baseline(path)
    images = [
        variant(make_phantom(256, seed=s, diseased=d).image, VARIANTS[s % len(VARIANTS)])
        for s in range(seeds)
        for d in (False, True)
    ]
    t_ours, t_base = np.full(len(images), np.inf), np.full(len(images), np.inf)
    differ = 0
    for r in range(max(repeats, 1)):
        for i, img in enumerate(images):
            c0 = time.thread_time()
            ours = pbtseg(img, **params)[0]
            c1 = time.thread_time()
            theirs = base(img)[0]
            c2 = time.thread_time()
            t_ours[i], t_base[i] = min(t_ours[i], c1 - c0), min(t_base[i], c2 - c1)
            differ += r == 0 and not np.array_equal(ours, theirs)
    print(f"Baseline {path}: {len(images)} images at 256 px, fastest of {repeats} interleaved runs per image")
    print(
        f"  mean CPU ms per image: ours {1000 * t_ours.mean():.2f}, baseline {1000 * t_base.mean():.2f}, "
        f"ratio ours / baseline {t_ours.sum() / t_base.sum():.3f}; label maps differ in {differ} images\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=ROOT / ".." / "shared" / "reference" / "art-asyn-published")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--seeds", type=int, default=40, help="phantom seeds per size and health state")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first phantom seed of the accuracy tables (e.g. 40: seeds the tests do not use, a held-out check)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the 256 px images")
    parser.add_argument("--timed-images", type=int, default=8)
    parser.add_argument(
        "--picture",
        type=Path,
        default=None,
        help="save the hardest 256 px cases (lowest Dice of ours) with true (green), our (red) and "
        "published (blue) lung outlines to this PNG",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another version of bundle/lungs/pbtseg.py (e.g. `git show <commit>:bundle/lungs/pbtseg.py > "
        "/tmp/lungs_before.py`): timed against ours on the same 256 px images, interleaved, "
        "and its maps compared pixel for pixel",
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="PBTSegParams fields for our PBTSeg as a JSON object (e.g. '{\"edge_step\": 0.02}'): how "
        "a parameter change is measured against the published code and the --baseline version",
    )
    parser.add_argument(
        "--steps", action="store_true", help="also print the CPU time of each step function of our PBTSeg at 256 px"
    )
    parser.add_argument(
        "--list-below",
        type=float,
        default=None,
        metavar="DICE",
        help="also list every lung of ours with whole-lung Dice below DICE (state, size, seed, label, Dice)",
    )
    args = parser.parse_args()
    fields = set(PBTSegParams.__dataclass_fields__)
    if not isinstance(args.params, dict) or set(args.params) - fields:
        raise SystemExit(
            f"--params {args.params}: expected a JSON object of PBTSegParams fields ({', '.join(sorted(fields))})"
        )
    seg = load_published(args.reference.resolve())
    if args.baseline:
        compare_baseline(args.baseline, args.seeds, args.repeats, args.params)
    if args.steps:
        time_steps(args.seeds, args.params)

    dices = {("ours", h): [] for h in ("healthy", "diseased")} | {("published", h): [] for h in ("healthy", "diseased")}
    swaps = {"ours": 0, "published": 0}
    speed = {}
    cases: list = []
    poor: list = []  # (Dice, state, size, seed, label) of our lungs below --list-below
    for size in args.sizes:
        timed_imgs = []
        for diseased in (False, True):
            state = "diseased" if diseased else "healthy"
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                ph = make_phantom(size, seed=seed, diseased=diseased)
                img = variant(ph.image, VARIANTS[seed % len(VARIANTS)])
                if len(timed_imgs) < args.timed_images and not diseased:
                    timed_imgs.append(img)
                ours_lab, pub_lab = pbtseg(img, **args.params)[0], published_map(seg, img)
                for name, lab in (("ours", ours_lab), ("published", pub_lab)):
                    dices[(name, state)] += list(zone_dice(lab, ph.lung))
                    swaps[name] += labels_swapped(lab, ph.lung)
                ours_whole = [d[0] for d in dices[("ours", state)][-2:]]  # lungs 1 and 2 of this image
                if args.list_below is not None:
                    poor += [(d, state, size, seed, k) for k, d in enumerate(ours_whole, 1) if d < args.list_below]
                if args.picture and size == min(args.sizes):
                    cases.append((min(ours_whole), f"{state} seed {seed}", ph.image, ph.lung, ours_lab, pub_lab))
        speed[size] = (
            timed(lambda x: pbtseg(x, **args.params), timed_imgs, args.repeats),
            timed(lambda x: published_map(seg, x), timed_imgs, args.repeats),
            timed(lambda x: pbtseg(x, **CORE_ONLY), timed_imgs, args.repeats),
        )
        print(f"{size} px done", file=sys.stderr)

    print_tables(args, speed, dices, swaps, poor)
    if args.picture:
        save_picture(args.picture, sorted(cases, key=lambda c: c[0])[:8])
        print(f"picture of the 8 hardest cases: {args.picture}")


def print_tables(args: argparse.Namespace, speed: dict, dices: dict, swaps: dict, poor: list) -> None:
    """The speed table, both Dice tables and (``--list-below``) our lungs below the given Dice."""
    print(
        f"PBTSeg vs published PBTSeg ({args.reference}); one CPU core; {args.seeds} seeds from {args.first_seed} x "
        f"sizes {args.sizes}; "
        "storage cycling float / gamma 0.6 / gamma 1.6 / 8 / 12 / 16-bit"
        + (f"; our parameters changed: {args.params}" if args.params else "")
        + "\n"
    )
    print("Speed, median CPU ms per image (published: resize to 256 + its PBTSeg + resize back)")
    print(f"{'size':>6} {'ours':>8} {'published':>10} {'ratio':>7} {'ours, core only':>16}")
    for size, (o, b, c) in speed.items():
        print(f"{size:>6} {o:>8.2f} {b:>10.2f} {b / o:>6.1f}x {c:>16.2f}")
    for name in ("ours", "published"):
        print(f"\nDice per lung, {name} (labels swapped in {swaps[name]} images)")
        print("\n".join(dice_table({state: np.array(dices[(name, state)]) for state in ("healthy", "diseased")})))
    print("\ntargets (ours): per-lung Dice median >= 0.93 and worst >= 0.85; <= 6 ms per 256 px image")
    if args.list_below is not None:
        print(f"\nour lungs with whole-lung Dice below {args.list_below:g} ({len(poor)}):")
        for d, state, size, seed, k in sorted(poor):
            print(f"  {state:<8} {size:>5} px  seed {seed:>4}  lung {k}  Dice {d:.3f}")


def fit_tile(image: np.ndarray, maps: list, side: int | None) -> tuple[np.ndarray, list]:
    """An image and its label maps shrunk so that the longer side is at most ``side`` px (maps nearest), then
    padded to ``side`` x ``side`` (images of several sizes in one picture); unchanged when ``side`` is None."""
    if side is None:
        return image, maps
    h, w = image.shape
    s = min(1.0, side / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    a = image.astype(np.float32)
    if s < 1:
        a = np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))
        maps = [
            m if m is None else np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST))
            for m in maps
        ]
    pad = ((0, side - a.shape[0]), (0, side - a.shape[1]))
    return np.pad(a, pad), [None if m is None else np.pad(m, pad) for m in maps]


def save_picture(path: Path, cases: list, side: int | None = None) -> None:
    """Two rows of four: each case with true (green), our (red) and published (blue) outlines.

    Args:
        path: the PNG to write.
        cases: (score, name, image, truth, ours, published or None) per case; all of one size unless ``side``.
        side: shrink each case to fit ``side`` x ``side`` px (cases of different sizes).
    """
    from scipy import ndimage

    tiles = []
    for score, name, image, truth, ours, pub in cases:
        a, (truth, ours, pub) = fit_tile(image, [truth, ours, pub], side)
        rgb = np.repeat(((a - a.min()) / max(float(np.ptp(a)), 1e-9))[..., None], 3, axis=-1)
        for lab, colour in ((pub, (0.2, 0.4, 1.0)), (truth, (0.1, 0.9, 0.1)), (ours, (1.0, 0.15, 0.15))):
            if lab is None:
                continue
            m = lab > 0
            rgb[m & ~ndimage.binary_erosion(m)] = colour
        tiles.append(rgb)
        print(f"  picture: {name} (our worst per-lung Dice {score:.3f})")
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 4], axis=1) for i in range(0, len(tiles), 4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.concatenate(rows, axis=0) * 255).astype(np.uint8)).save(path, optimize=True)


if __name__ == "__main__":
    main()
