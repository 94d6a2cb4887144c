"""Show what the texture anomaly synthesis makes, and how big and how strong its anomalies are.

Writes ``docs/images/synthesis_montage.png`` (rows: image, anomalous image, mask, difference) for a few
demo phantoms (the kinds adult PA, adult AP portable and child in turn) with PBTSeg lung maps (the phantom's exact
lungs where PBTSeg finds none), then prints
quantiles over many draws of: anomaly area as a fraction of the lungs, and the mean and maximum
intensity increase inside the mask.

    python scripts/synthesis_montage.py [--out docs/images/synthesis_montage.png] [--draws 200] [--size 256]

The side-by-side montage with the published code on the same images
(``docs/images/synthesis_published_vs_ours.png``) comes from ``benchmarks/bench_synthesis.py --montage``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data.phantoms import KINDS, make_phantom  # noqa: E402
from bundle.synthesis.texture import synthesize_texture_anomaly  # noqa: E402


def lung_map(image: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, str]:
    """PBTSeg's lung map, or the phantom's exact one when PBTSeg finds no lung."""
    from bundle.lungs.pbtseg import pbtseg

    labels, info = pbtseg(image)
    return (labels, "PBTSeg") if labels.any() else (fallback, "exact")


def montage(cases: list[tuple], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("image", "anomalous", "mask", "difference")
    fig, axes = plt.subplots(len(rows), len(cases), figsize=(2.3 * len(cases), 2.3 * len(rows)), squeeze=False)
    vmax = max(float((out - img).max()) for img, out, *_ in cases) or 1.0
    for j, (img, out, mask, lung, info, kind) in enumerate(cases):
        panels = (img, out, mask, out - img)
        for i, panel in enumerate(panels):
            ax = axes[i, j]
            if i == 3:
                ax.imshow(panel, cmap="magma", vmin=0, vmax=vmax)
            else:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            if i == 2:
                ax.contour(lung > 0, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(rows[i])
        axes[0, j].set_title(
            f"{kind}: {info['strokes']} stroke{'s' if info['strokes'] != 1 else ''}, "
            f"{100 * info['lung_fraction']:.0f}% of lung",
            fontsize=8,
        )
    fig.suptitle(
        "ART-ASyn texture anomalies on synthetic phantoms (mask: lung contour in cyan; difference: anomalous - image)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/images/synthesis_montage.png"))
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--columns", type=int, default=6)
    ap.add_argument("--phantoms", type=int, default=20, help="distinct phantoms the draws cycle through")
    args = ap.parse_args()

    rng = np.random.RandomState(0)
    phantoms = []
    sources = []
    kinds = [KINDS[seed % len(KINDS)] for seed in range(max(args.columns, args.phantoms))]
    for seed, kind in enumerate(kinds):
        ph = make_phantom(args.size, seed=seed, kind=kind)
        lung, source = lung_map(ph.image, ph.lung)
        phantoms.append((ph.image, lung))
        sources.append(source)
    print(f"lung maps: {sources.count('PBTSeg')} PBTSeg, {sources.count('exact')} exact (PBTSeg found none)")

    cases = []
    for (img, lung), kind in zip(phantoms[: args.columns], kinds, strict=False):
        out, mask, info = synthesize_texture_anomaly(img, lung, rng)
        cases.append((img, out, mask, lung, info, kind))
    montage(cases, Path(args.out))
    print(f"montage: {args.out}")

    frac, mean_up, max_up, strokes = [], [], [], []
    for k in range(args.draws):
        img, lung = phantoms[k % len(phantoms)]
        out, mask, info = synthesize_texture_anomaly(img, lung, rng)
        diff = out - img
        frac.append(info["lung_fraction"])
        strokes.append(info["strokes"])
        mean_up.append(float(diff[mask > 0].mean()) if mask.any() else 0.0)
        max_up.append(float(diff.max()))
    q = [0, 10, 25, 50, 75, 90, 100]
    print(f"{args.draws} draws at {args.size} px; quantiles {q}")
    for name, v in (
        ("area / lung area", frac),
        ("mean increase in mask", mean_up),
        ("max increase", max_up),
        ("strokes", strokes),
    ):
        print(f"  {name:22s}: " + "  ".join(f"{x:.3f}" for x in np.percentile(v, q)))
    print(f"  empty masks: {sum(f == 0 for f in frac)} of {args.draws}")


if __name__ == "__main__":
    main()
