"""Pictures and reports: inference overlays, evaluation curves, best/worst montages, the Markdown report.

Everything renders off-screen (matplotlib's Agg backend) and is written atomically.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from bundle.evaluation.metrics import image_ap, image_auroc, pr_curve, roc_curve
from bundle.io import as_2d, atomic_write

__all__ = [
    "csv_text",
    "DISPLAY_MAX_DIFF",
    "overlay_image",
    "plot_roc_pr",
    "save_montage",
    "markdown_report",
]

#: |image - recon| shown at full heat-map colour in overlays (errors are squared: 0.25 -> 0.0625)
DISPLAY_MAX_DIFF = 0.25
_CONTOUR_RGB = np.array([0.0, 1.0, 1.0])  # cyan: visible over grey and over the inferno heat map


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV text with a header row; None values become empty cells, other keys are ignored."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def _resize(arr: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    if arr.shape == shape:
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    if nearest:
        out = torch.nn.functional.interpolate(t, size=shape, mode="nearest-exact")
    else:
        out = torch.nn.functional.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()


def overlay_image(
    image: Any,
    error: Any,
    mask: Any | None = None,
    max_size: int | None = 1024,
    display_max: float = DISPLAY_MAX_DIFF,
) -> np.ndarray:
    """RGB picture of an image with its error as a heat map and the mask outline.

    Args:
        image: (H, W) or (1, H, W) image in [0, 1].
        error: squared error map; resized to the image when its size differs.
        mask: optional binary mask (any size, resized nearest); drawn as a cyan contour.
        max_size: longest side of the result (downscaled when larger; None keeps the size).
        display_max: |image - recon| at full colour; the heat map is transparent at 0.

    Returns:
        uint8 array (H', W', 3).
    """
    from matplotlib import colormaps

    img = np.clip(as_2d(image), 0.0, 1.0)
    h, w = img.shape
    if max_size is not None and max(h, w) > max_size:
        scale = max_size / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        img = _resize(img, (h, w), nearest=False)
    diff = np.sqrt(np.clip(_resize(as_2d(error), (h, w), nearest=False), 0.0, None))
    heat = np.clip(diff / display_max, 0.0, 1.0)
    alpha = (0.65 * heat)[..., None]
    rgb = img[..., None] * (1 - alpha) + colormaps["inferno"](heat)[..., :3] * alpha
    if mask is not None:
        m = _resize(as_2d(mask), (h, w), nearest=True) > 0
        width = max(1, round(0.003 * (h + w)))
        edge = m & ~ndimage.binary_erosion(m, iterations=width, border_value=1)
        rgb[edge] = _CONTOUR_RGB
    return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _save_figure(fig: Any, path: str | os.PathLike) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def plot_roc_pr(
    scores: Sequence[float], labels: Sequence[int], roc_path: str | os.PathLike, pr_path: str | os.PathLike
) -> tuple[Path, Path] | None:
    """ROC and precision-recall curves of image scores as two PNG files.

    Returns:
        the two paths, or None (nothing written) when only one class is present.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    roc, pr = roc_curve(scores, labels), pr_curve(scores, labels)
    if roc is None or pr is None:
        return None
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    ax.plot(roc["fpr"], roc["tpr"], lw=2, label=f"AUROC = {image_auroc(scores, labels):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title="Image-level ROC", xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right")
    _save_figure(fig, roc_path)
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    recall = np.concatenate([[0.0], pr["recall"]])
    precision = np.concatenate([[pr["precision"][0]], pr["precision"]])
    ax.step(recall, precision, where="pre", lw=2, label=f"AP = {image_ap(scores, labels):.3f}")
    ax.axhline(float(np.mean(labels)), ls="--", color="grey", lw=1, label="chance")
    ax.set(xlabel="recall", ylabel="precision", title="Image-level precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    _save_figure(fig, pr_path)
    return Path(roc_path), Path(pr_path)


def save_montage(path: str | os.PathLike, cases: Sequence[dict], title: str = "") -> Path | None:
    """A grid of cases, one row each: input with ground-truth outline, error heat map with predicted outline.

    Args:
        path: PNG destination.
        cases: dicts with ``image`` (H, W), ``error`` (H, W), ``pred`` (H, W) 0/1, optional ``mask``
            (ground truth) and ``caption``.
        title: figure title.

    Returns:
        the path, or None when there are no cases.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if not cases:
        return None
    fig = Figure(figsize=(5.0, 2.6 * len(cases)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(cases), 2))
    for row, case in zip(axes, cases, strict=True):
        gt = case.get("mask")
        row[0].imshow(overlay_image(case["image"], np.zeros_like(as_2d(case["image"])), gt, max_size=256))
        row[0].set_title("input" + (" + ground truth" if gt is not None else ""), fontsize=8)
        row[1].imshow(overlay_image(case["image"], case["error"], case["pred"], max_size=256))
        row[1].set_title(case.get("caption", ""), fontsize=8)
        for ax in row:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_report(metrics: dict, files: dict[str, str | None], notes: Sequence[str] = ()) -> str:
    """The evaluation report as Markdown text.

    Args:
        metrics: the content of ``metrics.json``.
        files: picture/table names relative to the report (``roc``, ``pr``, ``montage``, ``per_image``).
        notes: extra lines (e.g. missing masks, zero-shot mode).
    """
    mode = metrics.get("mode", "")
    lines = ["# Anomaly detection evaluation", ""]
    if mode == "zero-shot":
        lines += [
            "**Zero-shot mode**: the test set holds only diseased images with masks (QaTa-COV19 layout).",
            "Only pixel-level metrics are defined; image-level AUROC/AP need healthy images and are not reported.",
            "",
        ]
    lines += [
        f"- test images scored: {metrics.get('num_images')} "
        f"({metrics.get('num_healthy')} healthy, {metrics.get('num_diseased')} diseased, "
        f"{metrics.get('num_with_masks')} with ground-truth masks)",
        f"- score rule: `{metrics.get('score_rule')}`; mask rule: {metrics.get('mask_rule')}",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key in ("image_auroc", "image_ap", "pixel_dice", "pixel_dice_pooled", "pixel_auroc", "pixel_best_dice"):
        lines.append(f"| {key} | {_fmt(metrics.get(key))} |")
    op = metrics.get("best_f1")
    if op:
        lines += [
            "",
            f"Best-F1 image operating point: score >= {op['threshold']:.6g} gives F1 {op['f1']:.3f} "
            f"(precision {op['precision']:.3f}, recall {op['recall']:.3f}).",
        ]
    px = metrics.get("pixel_best_threshold")
    if px is not None:
        lines.append(f"Best pooled-Dice pixel threshold on |image - recon|: {px:.4g}.")
    lines += [""] + [f"- {n}" for n in notes]
    if files.get("roc"):
        lines += ["", f"![ROC]({files['roc']}) ![PR]({files['pr']})"]
    if files.get("montage"):
        lines += ["", "Best and worst cases:", "", f"![montage]({files['montage']})"]
    if files.get("per_image"):
        lines += ["", f"Per-image results: [{files['per_image']}]({files['per_image']})"]
    return "\n".join(lines).rstrip() + "\n"
