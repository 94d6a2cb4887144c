"""Size and strength of synthetic anomalies: what ``benchmarks/bench_synthesis.py`` compares with the published code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["anomaly_statistics", "summarize_statistics"]


def anomaly_statistics(
    image: np.ndarray, anomalous: np.ndarray, mask: np.ndarray, lung: np.ndarray
) -> dict[str, float]:
    """Size and strength of one synthetic anomaly (what ``benchmarks/bench_synthesis.py`` compares).

    Args:
        image: (H, W) healthy image in [0, 1].
        anomalous: (H, W) the same image with the anomaly.
        mask: (H, W) anomaly mask (non-zero = anomaly).
        lung: (H, W) lung label map (non-zero = lung).

    Returns:
        ``area`` (mask area / lung area), ``mean_in_mask`` (mean brightening inside the mask, 0 when
        empty), ``per_lung_pixel`` (total brightening / lung area), ``outside_share`` (share of the
        total brightening outside the mask, 0 when nothing brightened) and ``pieces`` (8-connected
        mask components).
    """
    inside = np.asarray(mask) > 0
    lung_area = max(int((np.asarray(lung) > 0).sum()), 1)
    diff = np.asarray(anomalous, np.float64) - np.asarray(image, np.float64)
    total = float(diff.sum())
    return {
        "area": float(inside.sum()) / lung_area,
        "mean_in_mask": float(diff[inside].mean()) if inside.any() else 0.0,
        "per_lung_pixel": total / lung_area,
        "outside_share": float(diff[~inside].sum()) / total if total > 0 else 0.0,
        "pieces": float(ndi.label(inside, structure=np.ones((3, 3), bool))[1]),
    }


def summarize_statistics(per_draw: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Summary of :func:`anomaly_statistics` over draws: area q10 / median / q90, mean brightening in the mask,
    brightening per lung pixel and share outside the mask (means over the draws; the share is pooled:
    total outside / total), median pieces and the number of empty masks."""
    col = {k: np.array([d[k] for d in per_draw], np.float64) for k in per_draw[0]}
    nonempty = col["area"] > 0
    return {
        "area_q10": float(np.percentile(col["area"], 10)),
        "area_median": float(np.median(col["area"])),
        "area_q90": float(np.percentile(col["area"], 90)),
        "mean_in_mask": float(col["mean_in_mask"][nonempty].mean()) if nonempty.any() else 0.0,
        "per_lung_pixel": float(col["per_lung_pixel"].mean()),
        "outside_share": float(
            (col["outside_share"] * col["per_lung_pixel"]).sum() / max(col["per_lung_pixel"].sum(), 1e-12)
        ),
        "pieces_median": float(np.median(col["pieces"])),
        "empty": float((~nonempty).sum()),
    }
