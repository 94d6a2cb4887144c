"""PBTSeg: unsupervised lung label maps for frontal chest X-rays by progressive binary thresholding.

The published method (ART-ASyn, WACV 2026) thresholds an 8-bit 256x256 image at fixed levels 50, 55, ..., 160,
keeps connected components with a lung-like shape and lets each lung grow while it keeps that shape. This module
keeps the idea and removes its weaknesses:

- Thresholds are quantiles of the image's own intensity distribution, so the masks are unchanged by any monotone
  intensity transform (gamma, window, contrast, 8/16-bit or float storage); every size and distance is a
  fraction of the image, so any resolution works; uniform padding strips at the edges are cropped first.
- The search runs on a block-averaged copy of about ``search_size`` pixels a side: each level is labelled once
  (``scipy.ndimage.label``), areas come from one ``bincount``, and the expensive shape tests (bounding box,
  centroid, convex hull solidity and border contact) run only on the few components whose area qualifies.
  The chosen lungs are then re-thresholded at full resolution inside a narrow band around the low-resolution
  result, so the cost beyond the fixed-size search is a few linear passes over the pixels.
- Real films are brighter in the lower zones than in the upper ones, and the published rule (keep the largest
  lung-shaped component) stops before the bases or keeps a lung that leaked into neighbouring soft tissue. The
  progressive thresholding stays the core; documented steps (see :class:`PBTSegParams`) reach the whole lung:
  a neck cut of leaks, per-zone thresholds from the lungs' own brightness trend, an edge-strength choice of each
  lung's level, joining pieces cut apart by an opacity, extension down to the diaphragm, a chest-wall constrained
  (lateral) hull, completion down to a dome that an opacity hides from the thresholds (or to the left lung's
  floor where the right dome itself is hidden), contralateral mirror completion, and a pair test that keeps non-chest
  images lung-free; two more shape tests reject candidates that reach the film's top or bottom edge or hold a long
  thin strip along a film edge (a leak into the air gap beside the arm); last, deep bites that opacities (and the
  hilar vessels) take out of the medial border of each lung's upper two thirds are filled out to its hull.
- A failed segmentation is not silent: the label map is empty and ``info["found"]`` is False with a reason;
  the dictionary transform logs a warning and records it in the metadata.

Orientation follows the bundle's image contract: row 0 is the top of the displayed image, column 0 the image's
left (the patient's right). Label 1 is the lung on the image's left, label 2 the lung on the image's right.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

__all__ = ["PBTSegParams", "CORE_ONLY", "pbtseg"]

logger = logging.getLogger(__name__)


_CROSS = ndimage.generate_binary_structure(2, 1)
_SQUARE = ndimage.generate_binary_structure(2, 2)
#: the pair test's gap between the lungs and the film's top and bottom edges (shoulders above, diaphragm below), in
#: fractions of the height; also the default of ``PBTSegParams.film_margin``, which asks it of every candidate
_PAIR_MARGIN = 0.03
#: the pair test's narrowest mediastinum, as the median gap between the two lungs' medial borders over the rows both
#: hold, in fractions of the width. The vertebral column alone takes about a tenth of a frontal chest film's width,
#: and the heart's rows are far wider; the phantoms' smallest median gap is 0.105 (256 px, seeds 0-39 and 80-159,
#: healthy and diseased; 0.146 at 512 and 1024 px, seeds 0-39). Two dark ellipses side by side in a head phantom
#: (``skimage.data.shepp_logan_phantom``), which pass every other test, lie 0.0375 apart.
_MIN_MEDIASTINUM = 0.06


@dataclass(frozen=True)
class PBTSegParams:
    """Parameters of :func:`pbtseg`. Sizes and distances are fractions of the (padding-cropped) image.

    Args:
        search_size: approximate side, in pixels, of the block-averaged copy on which the threshold search runs.
        quantile_range: lowest and highest threshold, as quantiles of the image's own intensities.
        quantile_step: spacing of the threshold levels in quantile units (16 levels by default); each lung is then
            tried once more half a step above its level.
        min_area: smallest lung, as a fraction of the image area (published: 2000 px at 256x256 = 3.1 %).
        max_area: largest lung, as a fraction of the image area (published: 10000 px at 256x256 = 15.3 %).
        min_aspect: bounding box height / width must exceed this (published: taller than wide, 1.0).
        min_height: bounding box height as a fraction of the image height (lungs span about half of a chest
            film); rejects small lung-shaped blobs in images that are not chest X-rays.
        min_solidity: area / convex hull area must exceed this (published 0.6).
        centroid_band: the centroid must lie between these fractions of the height and of the width.
        max_border_fraction: largest share of the convex hull perimeter that may lie on the image border.
        side_fraction: a label-1 lung's box must start left of this fraction of the width (mirrored for label 2).
        border_brightening: multiply by a smooth gain that is ``brightening_gain`` outside a central box, so dark
            background outside the body stays apart from the lungs (the published optional step).
        brightening_gain: gain outside the central box.
        crop_padding: ignore constant rows/columns at the image edges (black borders, letterbox padding).
        fill_holes: fill holes in each lung.
        rib_suppression: length, as a fraction of the height, of a vertical grey-level opening applied first: it
            removes thin bright roughly horizontal bands (ribs, clavicles) that cut the lung fields apart, while
            vertical structures (chest wall, mediastinum) stay; 0 disables it.
        spur_removal: radius, as a fraction of the image size, of a final binary opening that strips thin spurs
            and leaks from each lung (at least one pixel; 0 disables it).
        stop_quantile: past this quantile the search stops once the lungs have not grown for two levels (the
            published code stops above t = 130 when no component qualifies).
        zone_correction: per-zone thresholds. Real lung fields get brighter toward the bases (more soft tissue,
            breast shadows, vessels), so one global threshold that keeps the lungs apart from the background stops
            before the lower zones. The vertical trend of the intensity inside the lungs found first is measured
            (a line fitted to the mean of each lung row) and the search is repeated once on the image minus that
            trend: every zone of the lung is then thresholded relative to its own expected brightness. A lung
            from the second search replaces the first only where it contains most of it.
        max_zone_slope: cap of the trend, as the largest rise across the whole image height in units of the
            intensity spread inside the first lungs (standard deviation); guards against wild extrapolation.
        lateral_hull: chest-wall constrained hull. The lateral border of a lung follows the chest wall and is
            convex, so an opacity that cuts into the lung from the chest wall (a consolidation at the lung edge, a
            blunted costophrenic angle) leaves a bite out of an otherwise convex border. Each row of the lung is
            extended out to the convex hull on its lateral side only; the medial border (heart, hilum,
            mediastinum), which is legitimately concave, is left as found.
        diaphragm_reach: extension to the diaphragm, as the longest reach in fractions of the height (0 disables
            it). Just above the domes the lung is thin and dense, so thresholds stop short of the diaphragm.
            Below each column of the lung the strongest dark-to-bright step within the reach is located on the
            rib-suppressed image; when it is a clear step (the lung-to-abdomen contrast) and the image above it is
            still as dark as the lung's lower third, the column is extended down to it. The step rows are median
            filtered across the columns, so one noisy column cannot make a spike.
        edge_level: choose each lung's final threshold by its border. Growing until the shape tests fail (the
            published rule) keeps the largest lung-shaped component, which on real films often already includes a
            leak into the soft tissue above the apex or beside the chest wall that still looks lung-shaped.
            Around the search's level (``edge_window`` below and above, in quantiles, at ``edge_step`` steps) the
            level whose component has the strongest mean edge along its border is chosen: the lung's border is the
            strongest edge in its neighbourhood, the border of a leak runs through flat soft tissue.
        join_pieces: join the pieces of a lung that an opacity cuts apart. A band of consolidation across a lung
            splits it, at every level that keeps it apart from the background, into an upper and a lower piece;
            the search keeps one. Components at the lung's level of at least this fraction of its area, under or
            over it within its columns, are joined to it and the columns between them filled; 0 disables it.
        neck_cut: radius, as a fraction of the search image, of a binary opening of each found lung that cuts
            narrow necks through which it leaked (the published shape tests accept a lung with a thin leak into
            the air gap beside the arm or into a dark strip inside a collimated border); 0 disables it.
        edge_window: quantile span (below, above) of the search's level tried by ``edge_level``.
        edge_step: quantile step of the levels tried by ``edge_level``.
        mirror_completion: contralateral shape completion. A dense opacity (a lobar consolidation, an effusion)
            hides part of a lung from any threshold, but the two lungs are close to mirror images about the
            midline. A lung whose area is below this fraction of its partner's mirror image (0.9 times this fraction
            for label 2, the patient's left lung, part of whose mirror image the heart takes: a healthy left lung
            field is about 0.8-1.0 times the right one, so below 0.72 it has lost lung, typically a lower zone to
            a consolidation; the earlier factor 0.7, i.e. 0.56, left such lungs at Dice 0.75-0.81) is completed
            with that mirror image (on its own side, outside the partner); 0 disables it. Slightly over-covers the
            heart on the patient's left when the left lung is the one completed. The mirror axis is the median,
            over the rows both lungs hold, of the midpoint of the two lateral borders (the lungs' overall lateral
            extremes would shift it when an opacity took a lung's widest, lower rows); with one lung found (a
            white-out) it is the axis of left-right symmetry of the chest's edges (body outline, chest wall,
            mediastinum; the median over bands of the lung rows, ``mirror_bands``), which stay in place under an
            opacity, rather than the image's centre (off by
            up to 11 px at 256 px on rotated or off-centre phantoms, where the mirrored lung got Dice 0.65). A
            patient's right lung made from the left one's mirror image has its medial border filled out to its
            convex hull: the mirror image carries the heart's notch, which the right lung does not have.
        require_pair: report lungs only as a pair: two lungs side by side that overlap over at least half the
            height of the shorter one, of comparable heights, ending at least 3 % of the height inside the top and
            bottom of the image, with a brighter band (the mediastinum) between them, at least 6 % of the width wide
            (median over the rows both lungs hold).
            Natural photographs and radiographs of other body parts (the soft tissue either side of a long bone)
            can hold one or two dark lung-shaped regions; a frontal chest has the pair about the mediastinum. The
            price: a chest with one lung completely opacified gets no map at all (reported, not silent).
        dome_reach: dome completion, as the longest reach below a lung in fractions of the height (0 disables it).
            A dense opacity in a lower zone (a lobar consolidation, often in both lungs at once, so the mirror
            image of the partner cannot help) ends every threshold's lung at the opacity, well above the diaphragm.
            The dome usually stays visible under the opacity: the abdomen below it is denser than aerated or
            consolidated lung. On the rank image of the search grid, below each column of the lung, a dark-to-bright
            step of at least 0.15 in ranks counts as the dome edge when it takes the column at least half of the way
            from the lung's median level up to the brightest tissue below it within the reach (the abdomen; an
            opacity's own lower edge rises only part of the way) and, below the lung's bottom, when everything between
            the bottom and the step is darker (by 0.1 in ranks) than the tissue under the step, so the path runs
            through lung, clear or opacified, never through abdomen (a step inside the abdomen, under a gas bubble or
            at a collimation border, is reached only through brighter tissue). A column with such an edge at its own
            bottom already reaches the diaphragm and stays; the others go down to the strongest edge below. The lung
            is extended only when at least 30 % of its columns find an edge below; columns without evidence either
            way are interpolated, the edge row is median filtered across the columns, and the lateral hull
            (``lateral_hull``) is taken again. Runs before ``mirror_completion``, so a lung cut short by a lower-zone
            opacity is completed from its own dome rather than from a mirror image that may not fit it. It does not
            help where the consolidation is as dense as the abdomen (the dome's silhouette is lost).
        partner_floor: the partner's floor for the patient's right lung, as the smallest gap in fractions of the
            height (0 disables it). Where a consolidation as dense as the abdomen hides the right dome (its
            silhouette is lost, so ``dome_reach`` finds no edge), the left lung's lower border is the best evidence
            of where the right one ends: the domes lie at similar heights, the right one usually a little higher
            (a few % of the film's height; a gap of 4 % already extended healthy right lungs too far). When the right
            lung's lowest row lies more than this gap above the left lung's, each of its columns is extended down
            to the left lung's lower border mirrored about the axis of step 7 (the median midpoint of the lateral
            borders), and the lateral hull is taken again. Only the lower border is borrowed, not the mirror
            image's width, which fits badly on a rotated film. Not applied to the patient's left lung: the mirror
            of the right lung's lower border would run under the heart.
        mirror_bands: robust mirror axis for a white-out (``mirror_completion`` with one lung found), as the finest
            number of row bands (1: all the lung rows matched at once, the earlier rule). The axis of left-right
            symmetry of the chest's edges is found over all the found lung's rows, over each half, each third, ...
            down to ``mirror_bands`` equal bands (10 estimates for 4), and the median is kept. Matched over all the
            rows at once, edges without a partner on the other side (the clear lung's borders against the opaque
            side, a lesion's edge, the heart's border, the domes) pulled the axis by up to 12 px at 512 px (mirrored
            lung at Dice 0.76-0.81); they sit in some rows only, so the bands holding them give outlying axes and
            the median ignores them. The finest partition must keep enough rows per band: 5 bands alone (no coarser
            ones) swapped one error for another.
        film_margin: lungs end inside the film, as the smallest gap to the top and bottom of the image in fractions of
            the height (0 disables it): a lung-shape test of every candidate (search, half-step retry, neck cut, edge
            level), the same margin the pair test (``require_pair``) asks of the final lungs. On films where the soft
            tissue above the shoulders and beside the chest wall is barely brighter than the lungs, a lung joins it at
            a level a few steps above its own, and the joined region (lung, lateral soft tissue, a strip along the
            image's edge up to the top) still passed the published shape tests: the search kept it as the larger
            lung, mirror completion spread it to the partner, and the pair test then rejected the film, which got
            no map at all. With the margin in the shape tests the search keeps the largest component that can be a
            lung. A film that gets no map gets no synthetic anomaly in training. Healthy phantoms, seeds 80-159 at
            256/512/1024 px (seeds looked at while this step was chosen): lungs below Dice 0.85 from 18 to 4 of 480
            (five films without a map before, worst 0.000 -> 0.791; the 4 left are one film, seed 91, whose lungs
            leak at 512 and 1024 px at the level ``edge_level`` chooses). Seeds 0-39 (full grid): healthy median /
            worst unchanged at 0.955 / 0.903, diseased lungs below 0.85 from 10 to 9. Fresh seeds 200-279 (not looked
            at, all sizes): 12 of 240 healthy maps change, healthy lungs below 0.85 8 -> 8 (the arm-gap leaks of the
            README's limits), diseased 67 -> 65 of 480; labels never swapped. A lone lung that is to be
            mirrored (a white-out) must also be at least an eighth of the width wide, as the step let a brick of a
            photograph of a wall through as one.
        strip_radius: edge-strip test, the radius of a binary opening as a fraction of the height (0 disables it):
            a lung-shape test of every candidate (search, half-step retry, neck cut, edge level), like
            ``film_margin``. A candidate fails when the opening (square of side ``2 * strip_radius * h + 1``, 11 px
            on the 128 px search grid) removes a connected part of it that is at least ``strip_length`` of the height
            long or wide and comes within ``strip_edge`` of the height of an image edge. On some films the air gap
            between the arm and the chest wall (a dark strip 4-9 px wide on the search grid along the film's side
            edge) or the soft tissue over the shoulder joins a lung a few levels above its own. The joined region
            stays inside the film margin and passes the published shape tests; the neck cut (``neck_cut``, 5 px)
            is narrower than the strip, which also touches the lung over many rows where the chest wall is thin, so
            no opening cuts it off. The edge-strength level (``edge_level``) then often chooses this level, as the
            strip's own border (air gap against the arm) is a strong edge. The lateral hull (``lateral_hull``)
            then widens the thin strip into a wide band, and mirror completion copies that band to the partner, so
            both lungs scored 0.75-0.83. With the strip as a failed shape test the search and the edge level keep
            the largest level without it. The edge condition is what keeps diseased lungs: without it (any long
            thin part) the thin aerated rims that an opacity leaves inside the lung field failed too, and diseased
            lungs below Dice 0.85 on seeds 0-39 went from 9 to 20; their thin parts lie at least 7 % of the size
            from every image edge, the leaks within 1.5-3 %. Measured, before = ``strip_radius`` 0, all three sizes
            (docs/lungs.md): seeds 80-159 (looked at while the step was chosen), healthy lungs below 0.85
            4 -> 0 of 480 (worst 0.791 -> 0.853), diseased 62 -> 58, 16 of 480 maps changed; seeds 200-279 (looked
            at): healthy 8 -> 0 (worst 0.748 -> 0.874), diseased 65 -> 55, 16 maps changed; fresh seeds 300-379 (not
            looked at; no leak there): healthy 0 -> 0, diseased 27 -> 27, 7 maps changed, each lung within 0.001;
            seeds 0-39: healthy median / worst 0.955 / 0.903 -> 0.956 / 0.903, diseased below 0.85 9 -> 9, 12 of 240
            maps changed, each lung within 0.02. Labels never swapped.
        strip_length: the shortest strip of ``strip_radius``, as a fraction of the height (the leaks run 25-75 %
            of the height past the lung; a lung's own thin parts, its apex, costophrenic angle and the lower tongue
            beside the heart, are shorter).
        strip_edge: a strip of ``strip_radius`` comes closer than this fraction of the height to an image edge.
        medial_fill: medial bite filling, the depth of the shallowest bite filled as a fraction of the width (0
            disables it). Above the heart and the domes, the medial border of each lung runs along the mediastinum
            (the superior vena cava and the paratracheal stripe on the right, the aortic arch and the descending
            aorta on the left) and is close to straight. An opacity that touches the mediastinum merges with it
            (the silhouette sign): every threshold's lung then stops at the opacity's lateral edge, and the medial
            border gets a deep bite. The lateral hull (``lateral_hull``) leaves the medial border alone, as the
            heart's lower rows make it legitimately concave. Over the upper ``medial_rows`` of the lung's rows,
            each run of rows where the border lies inside the medial side of the convex hull (of those rows) is
            filled out to the hull when its deepest row lies at least this deep inside; shallower concavities stay.
            The same bites appear where the hilar vessels, brighter than the aerated lung, meet the mediastinum,
            so healthy lungs gain too. Runs last, on the final map, after the pair test
            (``require_pair``), whose test of the mediastinum's width sees the borders as thresholded.
        medial_rows: the share of a lung's rows, from its top down, in which ``medial_fill`` fills bites; below,
            the heart (on the left) and the cardiophrenic angle (both sides) make the medial border concave.
    """

    search_size: int = 128
    quantile_range: tuple[float, float] = (0.02, 0.62)
    quantile_step: float = 0.04
    min_area: float = 0.02
    max_area: float = 0.16
    min_aspect: float = 1.0
    min_height: float = 0.25
    min_solidity: float = 0.6
    centroid_band: tuple[float, float] = (1.0 / 6.0, 5.0 / 6.0)
    max_border_fraction: float = 0.15
    side_fraction: float = 1.0 / 3.0
    border_brightening: bool = False
    brightening_gain: float = 1.6
    crop_padding: bool = True
    fill_holes: bool = True
    rib_suppression: float = 0.04
    spur_removal: float = 0.006
    stop_quantile: float = 0.5
    zone_correction: bool = True
    max_zone_slope: float = 2.0
    lateral_hull: bool = True
    diaphragm_reach: float = 0.12
    edge_level: bool = True
    join_pieces: float = 0.15
    neck_cut: float = 0.015
    mirror_completion: float = 0.8
    edge_window: tuple[float, float] = (0.1, 0.06)
    edge_step: float = 0.01
    require_pair: bool = True
    dome_reach: float = 0.2
    partner_floor: float = 0.08
    mirror_bands: int = 4
    film_margin: float = _PAIR_MARGIN
    strip_radius: float = 0.04
    strip_length: float = 0.2
    strip_edge: float = 0.05
    medial_fill: float = 0.03
    medial_rows: float = 2.0 / 3.0


#: :func:`pbtseg` overrides that switch off every step added to the published progressive thresholding (zone
#: correction, edge level, neck cut, pieces, diaphragm, lateral hull, mirror completion, pair test, dome, partner
#: floor, film margin, edge strip, medial fill): the core that the tests and ``benchmarks/bench_pbtseg.py`` compare
#: the full method against. A new step gets its off value here.
CORE_ONLY: dict[str, Any] = {
    "zone_correction": False,
    "edge_level": False,
    "neck_cut": 0.0,
    "join_pieces": 0.0,
    "diaphragm_reach": 0.0,
    "lateral_hull": False,
    "mirror_completion": 0.0,
    "require_pair": False,
    "dome_reach": 0.0,
    "partner_floor": 0.0,
    "film_margin": 0.0,
    "strip_radius": 0.0,
    "medial_fill": 0.0,
}


def _as_2d_float(image: Any) -> np.ndarray:
    """(H, W) or (1, H, W) array-like of any numeric dtype -> finite float32 (H, W); several channels averaged."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.mean(axis=0)
    if a.ndim != 2:
        raise ValueError(f"PBTSeg expects a 2D image (H, W) or channel-first (C, H, W), got shape {a.shape}.")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"PBTSeg expects a real numeric image, got dtype {a.dtype}.")
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, a[finite].min() if finite.any() else 0.0).astype(np.float32)
    return a


def _content_box(a: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/cols ``(r0, r1, c0, c1)`` left after removing constant strips (padding) at the four edges."""
    row_flat = a.max(axis=1) == a.min(axis=1)
    col_flat = a.max(axis=0) == a.min(axis=0)

    def span(flat: np.ndarray) -> tuple[int, int]:
        keep = np.flatnonzero(~flat)
        return (int(keep[0]), int(keep[-1]) + 1) if keep.size else (0, 0)

    r0, r1 = span(row_flat)
    c0, c1 = span(col_flat)
    return r0, r1, c0, c1


def _running_extreme(a: np.ndarray, length: int, op: np.ufunc) -> np.ndarray:
    """``scipy.ndimage.minimum_filter1d(a, length, axis=0)`` (``op=np.minimum``) or its maximum twin, same values.

    The window is centred as scipy centres it and the border is its default 'reflect' (the rows mirrored, edge row
    included). Windows of 1, 2, 4, ... rows by doubling, then two overlapping ones: about log2(length) whole-array
    operations, several times faster than scipy's filter along the rows of a small array. ``length <= a.shape[0]``.
    """
    n, lo = a.shape[0], length // 2
    hi = length - 1 - lo
    cur = np.concatenate([a[:lo][::-1], a, a[n - hi :][::-1]])
    span = 1
    while 2 * span <= length:
        cur = op(cur[:-span], cur[span:])  # row i: the extreme of padded rows i .. i + 2 * span - 1
        span *= 2
    return op(cur[:n], cur[length - span : length - span + n])


def _vertical_opening(a: np.ndarray, length: int) -> np.ndarray:
    """Grey opening with a vertical line of ``length`` pixels (a running minimum, then a running maximum)."""
    if length < 2:
        return a
    if length > a.shape[0]:  # the mirrored border would need more rows than there are
        return ndimage.maximum_filter1d(ndimage.minimum_filter1d(a, length, axis=0), length, axis=0)
    return _running_extreme(_running_extreme(a, length, np.minimum), length, np.maximum)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes: background components that do not reach the array's edge (one labelling, linear time)."""
    lab, n = ndimage.label(~mask, structure=_CROSS)
    if n == 0:
        return mask
    outside = np.zeros(n + 1, bool)
    for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
        outside[edge] = True
    outside[0] = True
    return mask | ~outside[lab]


def _square_opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening of a bool mask by a square of side ``2 * radius + 1``, everything outside the array counted as
    background: separable min/max filters, so the cost does not depend on the radius. Returns a bool array."""
    size = 2 * radius + 1
    return ndimage.maximum_filter(
        ndimage.minimum_filter(mask.view(np.uint8), size, mode="constant"), size, mode="constant"
    ).astype(bool)


def _remove_spurs(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening (square of side ``2 * radius + 1``) on the mask's box, keeping its largest piece: strips thin
    spurs
    and one-line leaks that the full-resolution threshold lets out of the lung (e.g. along the trachea)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(rows[0] - radius, 0), rows[-1] + radius + 1
    c0, c1 = max(cols[0] - radius, 0), cols[-1] + radius + 1
    lab, n = ndimage.label(_square_opening(mask[r0:r1, c0:c1], radius), structure=_CROSS)
    out = np.zeros_like(mask)
    if n:
        out[r0:r1, c0:c1] = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Average ``f x f`` blocks (the trailing remainder rows/cols are dropped).

    Sums ``f`` strided column slices, then ``f`` strided row slices: whole-array adds, several times faster than a
    mean over the axes of a 4-D reshape (for ``f < 8`` the float32 result is bit-identical to that mean).
    """
    if f == 1:
        return a
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    cols = a[:h, 0:w:f].astype(np.float32)
    for j in range(1, f):
        cols += a[:h, j:w:f]
    out = cols[0::f].copy()
    for i in range(1, f):
        out += cols[i::f]
    return out / np.float32(f * f)


def _quantiles(a: np.ndarray, q: np.ndarray, sorted_a: np.ndarray | None = None) -> np.ndarray:
    """``np.quantile(a, q)`` (linear method, same float64 values) from one full sort: numpy's partial sort for
    dozens of quantiles costs about ten times as much. ``sorted_a``: ``np.sort(a, axis=None)`` when already known."""
    s = np.sort(a, axis=None) if sorted_a is None else sorted_a
    idx = q * (s.size - 1)
    lo = np.floor(idx)
    g = idx - lo
    lo = lo.astype(np.intp)
    below, above = s[lo], s[np.minimum(lo + 1, s.size - 1)]
    d = above - below
    return np.where(g >= 0.5, above - d * (1 - g), below + d * g)  # numpy's lerp, exact at both ends


def _gain_profile(n: int, lo: float, hi: float, sigma: float) -> np.ndarray:
    """1D Gaussian-blurred indicator of ``[lo*n, hi*n)``: the separable factor of the brightening field."""
    ind = np.zeros(n, np.float32)
    ind[int(round(lo * n)) : int(round(hi * n))] = 1.0
    return ndimage.gaussian_filter1d(ind, sigma, mode="nearest")


def _brightening_field(shape: tuple[int, int], gain: float) -> np.ndarray:
    """Gain ``gain`` outside the published central box (rows H/4..7H/8, cols W/10..9W/10), 1 inside, smoothed.

    The box indicator is a product of a row and a column indicator and the Gaussian is separable, so the blurred
    field is an outer product of two blurred 1D profiles (kernel about H/2 wide, i.e. sigma ~ H/12).
    """
    h, w = shape
    rows = _gain_profile(h, 0.25, 0.875, h / 12.0)
    cols = _gain_profile(w, 0.1, 0.9, h / 12.0)
    return gain - (gain - 1.0) * np.outer(rows, cols)


def _hull_tests(sub: np.ndarray, off_r: int, off_c: int, shape: tuple[int, int]) -> tuple[float, float]:
    """Convex-hull solidity and the share of the hull perimeter lying on the image border.

    Args:
        sub: (h, w) bool mask of one component, cropped to its bounding box at ``(off_r, off_c)``.
        shape: the full search image's shape, whose border is tested.

    The hull is built from the corners of the leftmost and rightmost pixel of each row, so a pixel-exact convex
    hull of the pixel squares results (solidity 1 for a rectangle) from only ``4 * h`` points.
    """
    rows = np.flatnonzero(sub.any(axis=1))
    left = sub[rows].argmax(axis=1)
    right = sub.shape[1] - sub[rows, ::-1].argmax(axis=1)
    pts = np.empty((4, rows.size, 2))  # blocks: (row, left), (row + 1, left), (row, right), (row + 1, right)
    pts[:, :, 0] = rows + off_r
    pts[1::2, :, 0] += 1
    pts[:2, :, 1] = left + off_c
    pts[2:, :, 1] = right + off_c
    pts = pts.reshape(-1, 2)
    try:
        hull = ConvexHull(pts)
    except QhullError:  # degenerate (a straight line of pixels)
        return 0.0, 1.0
    solidity = float(sub.sum()) / max(hull.volume, 1e-9)
    v = pts[hull.vertices]
    e0, e1 = v, np.concatenate([v[1:], v[:1]])
    length = np.hypot(*(e1 - e0).T)
    h, w = shape
    on_border = (
        ((e0[:, 0] == 0) & (e1[:, 0] == 0))
        | ((e0[:, 0] == h) & (e1[:, 0] == h))
        | ((e0[:, 1] == 0) & (e1[:, 1] == 0))
        | ((e0[:, 1] == w) & (e1[:, 1] == w))
    )
    return solidity, float(length[on_border].sum() / max(hull.area, 1e-9))


def _octagon_area(sub: np.ndarray) -> float:
    """Area of the bounding octagon (box cut by the tightest 45-degree lines) of a component's pixel squares.

    The octagon contains the convex hull, so ``area / octagon`` is a cheap lower bound of the solidity.
    """
    bh, bw = sub.shape
    # the extremes of r + c and r - c lie at the first or last pixel of a row: the rows' end pixels (a few short
    # vectors) instead of every pixel's coordinates
    r = np.flatnonzero(sub.any(axis=1))
    first = sub[r].argmax(axis=1)
    last = bw - 1 - sub[r, ::-1].argmax(axis=1)
    s_lo, s_hi = (r + first).min(), (r + last).max() + 2  # r + c over the pixels' corners
    d_lo, d_hi = (r - last).min() - 1, (r - first).max() + 1  # r - c over the pixels' corners
    # the four corner cuts are right isosceles triangles; they cannot overlap, as every box edge holds a pixel
    legs = [min(max(float(x), 0.0), float(min(bh, bw))) for x in (s_lo, bh + bw - s_hi, d_lo + bw, bh - d_hi)]
    return bh * bw - 0.5 * sum(x * x for x in legs)


def _contact(sub: np.ndarray, sr: slice, sc: slice, shape: tuple[int, int]) -> int:
    """Summed extent (first to last pixel) of a component's contact with each image edge it touches."""
    h, w = shape
    lines = []
    if sr.start == 0:
        lines.append(sub[0])
    if sr.stop == h:
        lines.append(sub[-1])
    if sc.start == 0:
        lines.append(sub[:, 0])
    if sc.stop == w:
        lines.append(sub[:, -1])
    total = 0
    for line in lines:
        on = np.flatnonzero(line)
        total += int(on[-1] - on[0] + 1) if on.size else 0
    return total


@dataclass
class _Lung:
    """The current best component for one side, on the search grid (``labels == k`` at ``level``)."""

    area: int
    level: float
    quantile: float
    labels: np.ndarray
    k: int
    slope: float = 0.0  # per-row trend subtracted from the search image (zone correction), grid units
    k_side: int = 0  # the side (1 or 2) when known

    @property
    def mask(self) -> np.ndarray:
        return self.labels == self.k


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of a non-empty mask (two projections: cheaper than ``find_objects`` over every label)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _is_lung(mask: np.ndarray, area: int, box: tuple[slice, slice], side: int, p: PBTSegParams) -> bool:
    """The lung-shape tests for one component (its mask, area and box): aspect, centroid, solidity, border contact.

    Cheap tests first; the convex hull is built only when the box touches the border or neither the box nor the
    bounding octagon vouches for the solidity (area / octagon area is a lower bound of area / hull area).
    """
    return _is_lung_box(mask[box], area, box, mask.shape, side, p)


def _box_passes(box: tuple[slice, slice], h: int, p: PBTSegParams) -> bool:
    """The tests of :func:`_is_lung_box` that need only the component's box in an image of height ``h``: taller
    than wide, tall enough, and ending inside the film (``film_margin``) at the top and bottom."""
    sr, sc = box
    bh = sr.stop - sr.start
    if bh <= p.min_aspect * (sc.stop - sc.start) or bh < p.min_height * h:
        return False
    return p.film_margin * h <= sr.start and sr.stop <= h - p.film_margin * h


def _is_lung_box(
    sub: np.ndarray, area: int, box: tuple[slice, slice], shape: tuple[int, int], side: int, p: PBTSegParams
) -> bool:
    """:func:`_is_lung` on the component cropped to its box (``sub``) in an image of ``shape``."""
    h, w = shape
    sr, sc = box
    bh, bw = sr.stop - sr.start, sc.stop - sc.start
    if not _box_passes(box, h, p):
        return False
    lo, hi = p.centroid_band
    # the column centroid first: it rejects most candidates of the search (the air beside the body)
    cx = (sub.sum(axis=0) @ np.arange(sc.start, sc.stop)) / area
    if not lo * w < cx < hi * w or (cx < 0.5 * w) != (side == 1):
        return False
    cy = (sub.sum(axis=1) @ np.arange(sr.start, sr.stop)) / area
    if not lo * h < cy < hi * h:
        return False
    touches = sr.start == 0 or sc.start == 0 or sr.stop == h or sc.stop == w
    if touches and _contact(sub, sr, sc, (h, w)) >= p.max_border_fraction * 2 * (bh + bw):
        return False  # the hull's border share is at least contact / box perimeter
    if touches or (area <= p.min_solidity * bh * bw and area <= p.min_solidity * _octagon_area(sub)):
        solidity, border = _hull_tests(sub, sr.start, sc.start, (h, w))
        if solidity <= p.min_solidity or border >= p.max_border_fraction:
            return False
    return p.strip_radius <= 0 or not _has_strip(sub, box, (h, w), p)


def _has_strip(sub: np.ndarray, box: tuple[slice, slice], shape: tuple[int, int], p: PBTSegParams) -> bool:
    """Whether a component (``sub``: its mask on its ``box`` in an image of ``shape``) holds a long thin strip that
    runs along the image's edge (``PBTSegParams.strip_radius``): a part that a binary opening (square of side
    ``2 * strip_radius * h + 1``) removes, at least ``strip_length`` of the height long (or wide) and coming within
    ``strip_edge`` of the height of an image edge."""
    h, w = shape
    sr, sc = box
    near = p.strip_edge * h
    if max(sub.shape) < p.strip_length * h or min(sr.start, sc.start, h - sr.stop, w - sc.stop) >= near:
        return False
    opened = _square_opening(sub, max(1, int(round(p.strip_radius * h))))
    lab, _ = ndimage.label(sub & ~opened, structure=_SQUARE)
    for r, c in ndimage.find_objects(lab):
        long = max(r.stop - r.start, c.stop - c.start) >= p.strip_length * h
        r0, r1, c0, c1 = r.start + sr.start, r.stop + sr.start, c.start + sc.start, c.stop + sc.start
        if long and min(r0, c0, h - r1, w - c1) < near:
            return True
    return False


def _search(
    work: np.ndarray, p: PBTSegParams, start: float = 0.0, sorted_work: np.ndarray | None = None
) -> dict[int, _Lung]:
    """Progressive thresholding on the search grid; returns the lung found for label 1 and/or 2.

    At each level the components are visited from the largest down; a component smaller than the current lung of
    its side cannot replace it, so the shape tests run on very few components. The search stops once the lungs
    have stopped growing for 2 levels past ``stop_quantile``. Then each lung is tried once more half a step above
    its level (the component there contains it, as thresholds are nested), which gives the resolution of a
    twice finer level grid for one extra labelling. Levels below the quantile ``start`` are skipped.
    """
    h, w = work.shape
    # at least 64 grid pixels: on tiny images a few noise pixels would otherwise pass the fractional minimum
    a_min, a_max = max(p.min_area * h * w, 64.0), p.max_area * h * w
    left_edge, right_edge = p.side_fraction * w, (1.0 - p.side_fraction) * w
    fine = np.arange(p.quantile_range[0], p.quantile_range[1] + 1e-9, 0.5 * p.quantile_step)
    fine_levels = _quantiles(work, fine, sorted_work)  # one sort serves the levels and the half-step retries
    qs, levels = fine[::2], fine_levels[::2]
    keep = qs >= start
    qs, levels = qs[keep], levels[keep]
    best: dict[int, _Lung] = {}
    last, idle = None, 0
    for q, t in zip(qs, levels, strict=True):
        if last is not None and t <= last:
            continue  # ties in a flat histogram: same mask as the previous level
        last = t
        lab, n = ndimage.label(work <= t, structure=_CROSS)
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        areas[0] = 0
        floor = max(a_min, min(b.area for b in best.values())) if len(best) == 2 else a_min
        cand = np.flatnonzero((areas > floor) & (areas < a_max))
        grew: set[int] = set()
        # every candidate's box from one pass over the labels (cheaper than a full-image mask per candidate)
        boxes = ndimage.find_objects(lab, max_label=int(cand.max())) if cand.size else []
        for k in cand[np.argsort(-areas[cand], kind="stable")]:
            sr, sc = boxes[k - 1]
            area = int(areas[k])
            side = 1 if sc.start < left_edge else 2 if sc.stop > right_edge else 0
            if side == 0 or side in grew or (side in best and area <= best[side].area):
                continue
            if not _box_passes((sr, sc), h, p):
                continue  # the box tests of _is_lung_box, before its mask is cut out
            if _is_lung_box(lab[sr, sc] == k, area, (sr, sc), (h, w), side, p):
                best[side] = _Lung(area, float(t), float(q), lab, int(k))
                grew.add(side)
                if len(grew) == 2:
                    break
        idle = 0 if grew else idle + 1
        if best and q > p.stop_quantile and idle >= 2:
            break
    retry_labels: dict[float, np.ndarray] = {}  # both lungs found at one level share the half-step labelling
    for side, lung in list(best.items()):
        i = int(np.searchsorted(fine, lung.quantile + 0.25 * p.quantile_step))
        if i >= len(fine) or fine_levels[i] <= lung.level:
            continue
        q, t = float(fine[i]), float(fine_levels[i])
        if t not in retry_labels:
            retry_labels[t] = ndimage.label(work <= t, structure=_CROSS)[0]
        lab = retry_labels[t]
        k = int(lab[np.unravel_index(np.argmax(lung.mask), lab.shape)])
        mask = lab == k
        sub_box = _box(mask)
        area = int(np.count_nonzero(mask[sub_box]))
        ok_side = sub_box[1].start < left_edge if side == 1 else sub_box[1].stop > right_edge
        if area > lung.area and area < a_max and ok_side and _is_lung(mask, area, sub_box, side, p):
            best[side] = _Lung(area, t, float(q), lab, k)
    return best


def _refine(
    content: np.ndarray,
    lung: _Lung,
    f: int,
    rib_len: int,
    gain: np.ndarray | None,
    fill_holes: bool,
    to_rank: Any = None,
) -> np.ndarray:
    """Re-threshold one lung at full resolution inside a band of one search pixel around its search-grid mask.

    Returns a bool mask of ``content``'s shape: the largest connected piece of ``filtered <= level`` in the band,
    holes filled. The filtering repeats what the search grid saw at full resolution (a box of the grid's cell
    size, then the vertical opening of ``rib_len`` pixels), so full-resolution values compare with the level.
    """
    sr, sc = _box(lung.mask)
    gr0, gc0 = max(sr.start - 1, 0), max(sc.start - 1, 0)
    guide = np.zeros(lung.labels.shape, bool)
    crop = (slice(gr0, sr.stop + 1), slice(gc0, sc.stop + 1))
    guide[crop] = ndimage.binary_dilation(lung.labels[crop] == lung.k, structure=_SQUARE)
    rows, cols = np.flatnonzero(guide.any(axis=1)), np.flatnonzero(guide.any(axis=0))
    r0, r1 = rows[0] * f, min((rows[-1] + 1) * f, content.shape[0])
    c0, c1 = cols[0] * f, min((cols[-1] + 1) * f, content.shape[1])
    band = np.repeat(np.repeat(guide[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], f, 0), f, 1)
    band = band[: r1 - r0, : c1 - c0]
    pad = max(f, rib_len)
    pr0, pc0 = max(r0 - pad, 0), max(c0 - pad, 0)
    region = content[pr0 : min(r1 + pad, content.shape[0]), pc0 : min(c1 + pad, content.shape[1])]
    if gain is not None:
        region = region * gain[pr0 : pr0 + region.shape[0], pc0 : pc0 + region.shape[1]]
    if f > 1:
        region = ndimage.uniform_filter(region, size=f | 1, mode="nearest")  # odd box, centred
    region = _vertical_opening(region, rib_len)
    vals = region[r0 - pr0 : r1 - pr0, c0 - pc0 : c1 - pc0]
    if lung.slope:
        # the zone correction's ranks and trend at full resolution: grid row i averages rows i*f .. i*f + f - 1
        grid_rows = (np.arange(r0, r1, dtype=np.float32) - 0.5 * (f - 1)) / f
        # rank(v) - slope * row <= level  <=>  v < sorted[floor(N * (level + slope * row))] (side="right" ranks):
        # one threshold per row instead of a rank lookup per pixel
        sorted_work = to_rank.sorted  # type: ignore[attr-defined]
        m = np.floor((lung.level + lung.slope * grid_rows) * sorted_work.size).astype(np.int64)
        thr = np.where(m < sorted_work.size, sorted_work[np.clip(m, 0, sorted_work.size - 1)], np.inf)
        vals = np.where(vals < thr[:, None], -np.inf, np.inf)  # compared with the level below
    lab, n = ndimage.label((vals <= lung.level) & band, structure=_CROSS)
    out = np.zeros(content.shape, bool)
    if n == 0:
        return out
    keep = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    if fill_holes:
        keep = _fill_holes(keep)
    out[r0:r1, c0:c1] = keep
    return out


def _pieces(img: np.ndarray, lung: _Lung, p: PBTSegParams) -> list[_Lung]:
    """Other parts of the same lung cut off by an opacity (``PBTSegParams.join_pieces``), on the search grid.

    At the lung's own level, a component counts as a piece of it when it is at least ``join_pieces`` times the
    lung's area, lies within the lung's columns for most of its width and starts within a fifth of the image height
    above or below the lung, and the lung together with it still spans less than the image's central 5/6.
    """
    h, w = img.shape
    lab, n = ndimage.label(img <= lung.level, structure=_CROSS)
    own = int(lab[np.unravel_index(np.argmax(lung.mask), lab.shape)])
    if n < 2 or own == 0:
        return []
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    sr, sc = _box(lung.mask)
    out = []
    for k in np.flatnonzero(areas >= p.join_pieces * lung.area):
        if k in (0, own):
            continue
        m = lab == k
        r, c = _box(m)
        overlap = min(c.stop, sc.stop) - max(c.start, sc.start)
        gap = max(r.start - sr.stop, sr.start - r.stop)
        if (
            overlap < 0.6 * (c.stop - c.start)
            or gap > 0.2 * h
            or min(r.start, sr.start) < h / 12
            or (max(r.stop, sr.stop) > h - h / 12)
        ):
            continue
        out.append(_Lung(int(areas[k]), lung.level, lung.quantile, lab, int(k), lung.slope, lung.k_side))
    return out


def _bridge(mask: np.ndarray, pieces: list[np.ndarray]) -> np.ndarray:
    """Join a lung and its pieces: the union, each column filled between its topmost and bottommost pixel where
    the column holds pixels of more than one of them (the opacity between the pieces becomes lung)."""
    union = mask.copy()
    count = mask.any(axis=0).astype(np.int32)
    for m in pieces:
        union |= m
        count += m.any(axis=0)
    cols = np.flatnonzero(count > 1)
    if cols.size == 0:
        return union
    sub = union[:, cols]
    top = sub.argmax(axis=0)
    bottom = sub.shape[0] - 1 - sub[::-1].argmax(axis=0)
    r = np.arange(sub.shape[0])[:, None]
    union[:, cols] |= (r >= top[None, :]) & (r <= bottom[None, :])
    return union


def _cut_necks(lung: _Lung, radius: int, side: int, p: PBTSegParams) -> _Lung:
    """Binary opening of a search-grid lung (square of side ``2 * radius + 1``), keeping the largest piece.

    A lung that leaked through a narrow channel (the air gap between arm and chest wall, a dark strip inside a
    collimated border) keeps its lung shape by the published tests; the opening cuts such necks, which are much
    narrower than any lung. The largest piece left that passes the lung-shape tests is kept (the lung unchanged
    when none does). Corners the opening rounds off are restored at full resolution by the band around the mask.
    """
    mask = lung.mask
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(rows[0] - radius, 0), rows[-1] + radius + 1
    c0, c1 = max(cols[0] - radius, 0), cols[-1] + radius + 1
    lab, n = ndimage.label(_square_opening(mask[r0:r1, c0:c1], radius), structure=_CROSS)
    if n == 0:
        return lung
    areas = np.bincount(lab.ravel())[1:]
    if n == 1 and areas[0] == lung.area:
        return lung
    full = np.zeros_like(mask)
    for k in np.argsort(-areas, kind="stable") + 1:  # the largest piece that still looks like a lung
        full[:] = False
        full[r0:r1, c0:c1] = lab == k
        area = int(areas[k - 1])
        if _is_lung(full, area, _box(full), side, p):
            return _Lung(area, lung.level, lung.quantile, full.astype(np.uint8), 1, lung.slope, side)
    return lung


def _inner_border(m: np.ndarray) -> np.ndarray:
    """Pixels of ``m`` with a 4-neighbour outside it (the array's edge counts as outside): ``m`` minus its binary
    erosion by the cross, by four shifted ANDs (no per-call set-up of a general morphology routine)."""
    core = m.copy()
    core[1:] &= m[:-1]
    core[:-1] &= m[1:]
    core[:, 1:] &= m[:, :-1]
    core[:, :-1] &= m[:, 1:]
    core[0] = core[-1] = False
    core[:, 0] = core[:, -1] = False
    return m & ~core


def _seed_component(
    crop: np.ndarray, t: float, seed: tuple[int, int], bound: tuple[slice, slice]
) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """The component of ``crop <= t`` that holds ``seed``, labelled on the box ``bound`` of the crop only.

    ``bound`` must contain that component (the box of the component at any higher level does: thresholds are
    nested), so labelling the smaller box gives the same component. Returns the component cropped to its own box
    and that box in crop coordinates, or None when the seed is above ``t``.
    """
    rows, cols = bound
    lab, _ = ndimage.label(crop[bound] <= t, structure=_CROSS)
    k = lab[seed[0] - rows.start, seed[1] - cols.start]
    if k == 0:
        return None
    m = lab == k
    br, bc = _box(m)
    return m[br, bc], (
        slice(br.start + rows.start, br.stop + rows.start),
        slice(bc.start + cols.start, bc.stop + cols.start),
    )


@dataclass
class _EdgeScan:
    """One lung's edge-level scan (:func:`_edge_level`): the window, and each distinct component seen so far.

    Args:
        crop: (hw, ww) window of the search image around the lung.
        gcrop: (hw, ww) the gradient magnitude on the window.
        win: the window's rows and columns in the search image.
        seed: the lung's darkest pixel, in window coordinates.
        shape: (h, w) of the search image.
        side: the lung's label (1 or 2), for the shape tests.
        p: the parameters (shape tests, ``max_area``).
    """

    crop: np.ndarray
    gcrop: np.ndarray
    win: tuple[slice, slice]
    seed: tuple[int, int]
    shape: tuple[int, int]
    side: int
    p: PBTSegParams
    # component area -> [first level index, border score (None: not lung-shaped), mask on its box, its box]
    seen: dict[int, list] | None = None

    def visit(self, j: int, t: float, bound: tuple[slice, slice]) -> tuple[tuple[slice, slice] | None, bool]:
        """Level ``j`` (threshold ``t``), labelled on ``bound``. Returns the component's box (None when the seed is
        above ``t``) and whether the component leaks: at least ``max_area`` or running out of the window where the
        window lies inside the image. Both only grow with the level, so a leaking level ends the scan upward.
        Components are nested, so equal areas mean the same component: it counts at its lowest level."""
        got = _seed_component(self.crop, t, self.seed, bound)
        if got is None:
            return None, False
        sub, (br, bc) = got
        area = int(np.count_nonzero(sub))
        (h, w), (hw, ww), win = self.shape, self.crop.shape, self.win
        if (
            area >= self.p.max_area * h * w
            or (win[0].start > 0 and br.start == 0)
            or (win[0].stop < h and br.stop == hw)
            or (win[1].start > 0 and bc.start == 0)
            or (win[1].stop < w and bc.stop == ww)
        ):
            return (br, bc), True
        seen = self.seen if self.seen is not None else {}
        self.seen = seen
        if area in seen:
            seen[area][0] = min(seen[area][0], j)
            return (br, bc), False
        box = (
            slice(br.start + win[0].start, br.stop + win[0].start),
            slice(bc.start + win[1].start, bc.stop + win[1].start),
        )
        score = None
        if _is_lung_box(sub, area, box, self.shape, self.side, self.p):
            score = float(self.gcrop[br, bc][_inner_border(sub)].mean())
        seen[area] = [j, score, sub, (br, bc)]
        return (br, bc), False


def _edge_level(
    img: np.ndarray, lung: _Lung, grad: np.ndarray, p: PBTSegParams, sorted_img: np.ndarray | None = None
) -> _Lung:
    """Re-choose one lung's threshold where its border lies on the strongest edges (``PBTSegParams.edge_level``).

    Levels at fine quantile steps (``edge_step``) around the search's level are tried on a window around the lung:
    the component holding the lung's darkest pixel must pass the lung-shape tests and stay inside the window; of
    those, the one whose border pixels have the highest mean gradient magnitude (``grad``) wins (the lowest level
    on a tie).

    The levels from the search's level up are labelled on the whole window, until the component leaks out of it;
    the levels below, from the top down, only on the box of the component one level higher, which holds the
    component (thresholds are nested): the same components on less than half of the window's pixels.

    Args:
        img: (h, w) search image the lung was found on (its ``level`` is in its units).
        lung: the lung from the search.
        grad: (h, w) gradient magnitude of the rank image (invariant to monotone intensity changes).
        sorted_img: ``np.sort(img, axis=None)`` when already known (saves a sort).
    """
    h, w = img.shape
    sr, sc = _box(lung.mask)
    mr, mc = int(0.12 * h), int(0.12 * w)
    win = (slice(max(sr.start - mr, 0), min(sr.stop + mr, h)), slice(max(sc.start - mc, 0), min(sc.stop + mc, w)))
    crop = img[win]
    seed = np.unravel_index(np.argmin(np.where(lung.mask[win], crop, np.inf)), crop.shape)
    qs = np.arange(max(lung.quantile - p.edge_window[0], 0.0), lung.quantile + p.edge_window[1] + 1e-9, p.edge_step)
    levels = _quantiles(img, qs, sorted_img)
    scan = _EdgeScan(crop, grad[win], win, seed, (h, w), 1 if lung.k_side == 1 else 2, p)
    whole = (slice(0, crop.shape[0]), slice(0, crop.shape[1]))
    split = int(np.searchsorted(levels, lung.level))
    bound = whole
    for j in range(split, len(levels)):
        box, leaks = scan.visit(j, float(levels[j]), whole)
        if j == split and box is not None:
            bound = box
        if leaks:
            break
    for j in range(split - 1, -1, -1):
        box, _ = scan.visit(j, float(levels[j]), bound)
        if box is None:
            break  # the seed is above this level, and above every lower one
        bound = box
    found = [x for x in (scan.seen or {}).values() if x[1] is not None]
    if not found:
        return lung
    j, _, sub, (br, bc) = max(found, key=lambda x: (x[1], -x[0]))
    full = np.zeros((h, w), np.uint8)
    full[br.start + win[0].start : br.stop + win[0].start, bc.start + win[1].start : bc.stop + win[1].start] = sub
    return _Lung(
        int(np.count_nonzero(sub)), float(levels[j]), float(qs[j]), full, 1, lung.slope, 2 if scan.side == 2 else 1
    )


def _zone_trend(work: np.ndarray, best: dict[int, _Lung], max_slope: float) -> float:
    """Slope (intensity per search-grid row) of the brightness inside the found lungs, from the top down.

    A least-squares line through the mean intensity of every lung row (both lungs pooled, each row weighted by its
    pixel count); 0 when the lungs do not get brighter downward. Capped at ``max_slope`` standard deviations of the
    lung intensities per image height.
    """
    rows, vals = [], []
    for lung in best.values():
        m = lung.mask
        r = np.nonzero(m)[0]
        rows.append(r)
        vals.append(work[m])
    r = np.concatenate(rows).astype(np.float64)
    y = np.concatenate(vals).astype(np.float64)
    if r.size < 16 or np.ptp(r) < 4:
        return 0.0
    rc = r - r.mean()
    slope = float((rc * (y - y.mean())).sum() / max((rc * rc).sum(), 1e-12))
    cap = max_slope * float(y.std()) / work.shape[0]
    return min(max(slope, 0.0), cap)


def _lateral_hull(mask: np.ndarray, side: int) -> np.ndarray:
    """Extend every row of a lung out to its convex hull on the lateral side (image left for label 1, right for 2).

    The hull is built from the pixel-square corners of the leftmost and rightmost pixel of each row; each row is
    then filled from the hull's lateral edge to the row's lateral-most pixel. Nothing changes medially (rows under
    a dome hold lung both at the costophrenic and at the cardiophrenic angle, with the dome between them), and
    rows without lung pixels stay empty, so the apex and the domes are not extended.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 3:
        return mask
    sub = mask[rows[0] : rows[-1] + 1]
    present = sub.any(axis=1)
    r = np.flatnonzero(present)
    lo = sub[r].argmax(axis=1)
    hi = sub.shape[1] - sub[r, ::-1].argmax(axis=1)
    pts = np.empty((4, r.size, 2))
    pts[:, :, 0] = r
    pts[1::2, :, 0] += 1
    pts[:2, :, 1] = lo
    pts[2:, :, 1] = hi
    pts = pts.reshape(-1, 2)
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return mask
    v = pts[hull.vertices]
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = np.concatenate([y0[1:], y0[:1]]), np.concatenate([x0[1:], x0[:1]])  # the next vertex of each
    yc = r[:, None] + 0.5
    dy = y1 - y0
    t = (yc - y0) / np.where(dy == 0, 1.0, dy)
    crosses = (dy != 0) & (t >= 0) & (t <= 1)
    xs = x0 + t * (x1 - x0)
    out = mask.copy()
    block = out[rows[0] : rows[-1] + 1]
    cols = np.arange(sub.shape[1])
    if side == 1:
        edge = np.where(crosses, xs, np.inf).min(axis=1)
        start = np.minimum(np.ceil(edge - 0.5).astype(np.intp), lo)
        block[r] |= (cols[None, :] >= start[:, None]) & (cols[None, :] < lo[:, None])
    else:
        edge = np.where(crosses, xs, -np.inf).max(axis=1)
        stop = np.maximum(np.floor(edge + 0.5).astype(np.intp), hi)
        block[r] |= (cols[None, :] >= hi[:, None]) & (cols[None, :] < stop[:, None])
    return out


def _to_diaphragm(smooth: np.ndarray, mask: np.ndarray, reach: int, k: int, to_rank: Any) -> np.ndarray:
    """Extend each column of a lung down to the diaphragm edge (see ``PBTSegParams.diaphragm_reach``).

    Args:
        smooth: (H, W) rib-suppressed, smoothed image (bright bone), the frame of ``mask``.
        mask: (H, W) bool lung.
        reach: longest extension, pixels.
        k: half-length, pixels, of the vertical step ``smooth[r + k] - smooth[r - k]`` that marks an edge.
        to_rank: maps intensities to ranks (monotone), in which the steps and levels are measured.
    """
    h = mask.shape[0]
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size < 3 or reach < 2:
        return mask
    rows = np.flatnonzero(mask.any(axis=1))
    inside = smooth[mask]
    lower = mask[rows[0] + 2 * (rows[-1] - rows[0]) // 3 :]
    lower_vals = smooth[rows[0] + 2 * (rows[-1] - rows[0]) // 3 :][lower]
    if lower_vals.size == 0:
        return mask
    bottom = h - 1 - mask[::-1, cols].argmax(axis=0)
    offs = np.arange(1, reach + 1)
    rr = bottom[None, :] + offs[:, None]
    ok = (rr + k < h) & (rr - k >= 0)
    rr = np.clip(rr, k, h - 1 - k)
    # the values above and below each row all lie in one segment of its column (reach + 2k rows from s0): ranking the
    # segment once costs about half of ranking the two shifted copies
    s0 = rr[0] - k
    seg = smooth[np.minimum(s0[None, :] + np.arange(reach + 2 * k)[:, None], h - 1), cols[None, :]]
    # one rank lookup for the lower lung's 90th percentile, the lung's median and the column segments
    ranks = to_rank(np.concatenate([np.array([np.quantile(lower_vals, 0.9), np.median(inside)]), seg.ravel()]))
    lung_hi = float(ranks[0])
    contrast = 0.9 - float(ranks[1])
    if contrast <= 0:
        return mask
    seg_rank = ranks[2:].reshape(seg.shape)
    at = np.arange(cols.size)[None, :]
    above, below = seg_rank[rr - k - s0[None, :], at], seg_rank[rr + k - s0[None, :], at]
    step = below - above
    # the path down to the edge must stay lung-dark: stop at the first pixel brighter than the lower lung
    dark_path = np.minimum.accumulate(above <= lung_hi + 0.1 * contrast, axis=0)
    step = np.where(ok & dark_path, step, -np.inf)
    best = step.argmax(axis=0)
    good = step[best, np.arange(cols.size)] >= 0.25 * contrast
    # the lateral costophrenic angle is the lowest point of a lung field on a frontal film: no column goes below it
    target = np.minimum(np.where(good, bottom + 1 + best, bottom), bottom.max() + 1)
    target = np.minimum(target, ndimage.median_filter(target, size=max(3, (cols.size // 12) | 1), mode="nearest"))
    out = mask.copy()
    r0, r1 = int(bottom.min()) + 1, int(target.max())  # only the rows the extensions span
    r = np.arange(r0, r1)[:, None]
    out[r0:r1, cols] |= (r > bottom[None, :]) & (r < target[None, :])
    return out


def _opaque_partner(labels: np.ndarray, image: np.ndarray) -> bool:
    """One lung found: is the other side of the chest where a lung should be, but opaque (a white-out)?

    The mirror image of the found lung about the centre of the image's content must lie inside the image, be
    brighter than the found lung (opacified, not air outside the body) and be separated from it by a brighter band
    (the mediastinum). The found lung must end inside the film at the top and bottom and be a whole lung, at least
    an eighth of the width wide (the mirror image is made of it; whole lungs are 0.2-0.35 of the film's width): a
    narrow dark strip of another kind of image (a brick in a wall) is not completed into a pair.
    """
    k = int(labels.max())
    mask = labels == k
    (rs, cs) = _box(mask)
    h, w = labels.shape
    margin = _PAIR_MARGIN * h
    if rs.start < margin or rs.stop > h - margin or cs.stop - cs.start < w / 8:
        return False
    mc = slice(w - cs.stop, w - cs.start)
    if mc.start < 0.02 * w or mc.stop > 0.98 * w or (mc.start < cs.stop and cs.start < mc.stop):
        return False
    lung = float(np.median(image[mask]))
    mirror = float(np.median(image[rs, mc][mask[rs, cs][:, ::-1]]))
    gap = image[rs, min(cs.stop, mc.stop) : max(cs.start, mc.start)]
    return gap.size > 0 and mirror > lung and float(np.median(gap)) > lung


def _symmetry_axis(image: np.ndarray, rows: slice, to_rank: Any) -> int:
    """Twice the column of the chest's mirror axis (column units), from the left-right symmetry of its edges.

    Over the lung rows, each column's median intensity (as a rank, so monotone intensity changes do not move the
    axis) is smoothed and differentiated; the axis is where this edge-strength profile best matches its own mirror
    image (least mean absolute difference over 40 % of the width either side), searched in the central fifth of the
    width. The edges (body outline, chest wall, lung borders, mediastinum) stay where they are when a lung is
    opacified, whereas the intensities themselves do not: the profile of intensities would be pulled toward the
    clear side.
    """
    w = image.shape[1]
    prof = to_rank(np.quantile(image[rows], 0.5, axis=0, method="lower")).astype(
        np.float64
    )  # a pixel value: exact ranks
    prof = ndimage.uniform_filter1d(prof, max(3, int(round(0.02 * w)) | 1), mode="nearest")
    edge = np.abs(np.gradient(prof))
    x = np.arange(w)
    a2 = np.arange(int(0.8 * w), int(1.2 * w) + 1)[:, None]  # candidate axes (twice the column) x columns
    m = a2 - x[None, :]
    ok = (m >= 0) & (m < w) & (np.abs(2 * x[None, :] - a2) <= 0.8 * w)
    diff = np.where(ok, np.abs(edge[None, :] - edge[np.clip(m, 0, w - 1)]), 0.0)
    cost = diff.sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
    return int(a2[int(np.argmin(cost)), 0])


def _banded_axis(image: np.ndarray, rows: slice, to_rank: Any, bands: int) -> int:
    """Twice the column of the chest's mirror axis for a white-out (``PBTSegParams.mirror_bands``): the median of
    :func:`_symmetry_axis` over all of the found lung's rows, each half of them, each third, ... down to ``bands``
    equal bands.

    Over all the lung rows at once, edges of one side that have no partner on the other (the clear lung's borders
    against an opaque side, a lesion's edge, the heart's border, a dome) pull the best match off the axis. Such
    edges sit in some rows only: the bands holding them give outlying axes, the others agree, and the median keeps
    theirs. Coarser partitions are pooled with the finest so that short bands, whose profiles carry fewer edges,
    do not decide alone.

    Args:
        image: (H, W) full-resolution content.
        rows: the found lung's rows.
        to_rank: maps pixel values to ranks (monotone intensity changes keep the axis).
        bands: the finest number of row bands; 1 matches all the rows at once (a single estimate).

    Returns:
        Twice the axis column, in column units of ``image`` (as :func:`_symmetry_axis`).
    """
    axes = []
    for n in range(1, max(bands, 1) + 1):
        edges = np.linspace(rows.start, rows.stop, n + 1).round().astype(int)
        pairs = zip(edges[:-1], edges[1:], strict=True)
        axes += [_symmetry_axis(image, slice(a, b), to_rank) for a, b in pairs if b > a]
    return int(round(float(np.median(axes))))


def _mirror_complete(labels: np.ndarray, ratio: float, axis2: int | None = None) -> None:
    """Contralateral shape completion (``PBTSegParams.mirror_completion``), in place on a label map.

    The mirror axis (``axis2``: twice its column) is given for one found lung (:func:`_symmetry_axis`); for two it is
    the median midpoint of the two lungs' lateral borders over the rows both hold (the chest wall is close to
    symmetric), or of their lateral extremes when they share no row. A lung whose area is
    below ``ratio`` times the area of its partner's mirror image gets the union with it, on its own side of the
    axis and outside the other lung.
    """
    one, two = labels == 1, labels == 2
    w = labels.shape[1]
    if axis2 is None:
        # row by row over the rows both lungs hold: an opacity that takes a lower zone takes the lung's widest rows,
        # so the lungs' overall lateral extremes would move the axis toward the opacified side
        both = one.any(axis=1) & two.any(axis=1)
        if both.any():
            lat1 = one[both].argmax(axis=1)
            lat2 = w - two[both, ::-1].argmax(axis=1)
            axis2 = int(round(float(np.median(lat1 + lat2)))) - 1
        else:
            (_, c1), (_, c2) = _box(one), _box(two)
            axis2 = c1.start + c2.stop - 1  # twice the mirror axis, in column units
    for k, mask, other in ((1, one, two), (2, two, one)):
        rows, cols = np.nonzero(other)
        mc = axis2 - cols
        ok = (mc >= 0) & (mc < w)
        # the heart takes a share of the patient's left lung (label 2): its partner's mirror image is larger
        if np.count_nonzero(mask) >= ratio * (1.0 if k == 1 else 0.9) * np.count_nonzero(ok):
            continue
        mirrored = np.zeros_like(mask)
        mirrored[rows[ok], mc[ok]] = True
        side = (np.arange(w) * 2 < axis2) if k == 1 else (np.arange(w) * 2 > axis2)
        labels[mirrored & side[None, :] & (labels == 0)] = k


def _medial_fill(view: np.ndarray, depth: float, share: float) -> None:
    """Step 13 (``PBTSegParams.medial_fill``), in place on the label map: deep bites in the medial border of each
    lung's upper rows are filled out to the convex hull of those rows.

    Args:
        view: (H, W) label map.
        depth: shallowest bite filled, as a fraction of the width (a run of rows is filled when its deepest row
            lies at least this far inside the hull).
        share: share of each lung's rows, from its top down, in which bites are filled.
    """
    w = view.shape[1]
    for side in (1, 2):
        m = view == side
        if np.count_nonzero(m) < 3:
            continue
        br, bc = _box(m)
        # the lung's upper rows, on its columns (the hull of those rows lies within them)
        box = (slice(br.start, br.start + int(share * (br.stop - 1 - br.start))), bc)
        upper = m[box]
        # the medial side of lung 1 is the image's right: the lateral hull of the other side's lung
        add = _lateral_hull(upper, 2 if side == 1 else 1) & ~upper
        gap = add.sum(axis=1)
        runs, n = ndimage.label(gap > 0)
        if n == 0:
            continue
        deep = np.zeros(n + 1, bool)
        deep[1:] = ndimage.maximum(gap, runs, index=np.arange(1, n + 1)) >= depth * w
        add &= deep[runs][:, None]
        region = view[box]
        region[add & (region == 0)] = side


def _is_chest(labels: np.ndarray, image: np.ndarray) -> bool:
    """The pair test (``PBTSegParams.require_pair``): two lungs side by side, overlapping in height, of comparable
    height, with a brighter band (the mediastinum) between them at the rows they share, as wide as a mediastinum."""
    one, two = labels == 1, labels == 2
    if not one.any() or not two.any():
        return False
    both = one.any(axis=1) & two.any(axis=1)
    w = labels.shape[1]
    gap = two[both].argmax(axis=1) - (w - one[both, ::-1].argmax(axis=1))  # between the medial borders, per row
    if gap.size and float(np.median(gap)) < _MIN_MEDIASTINUM * w:
        return False
    (r1, c1), (r2, c2) = _box(one), _box(two)
    overlap = min(r1.stop, r2.stop) - max(r1.start, r2.start)
    h1, h2 = r1.stop - r1.start, r2.stop - r2.start
    if overlap < 0.3 * min(h1, h2) or min(h1, h2) < 0.35 * max(h1, h2) or c1.stop > c2.start + 2:
        return False
    # lungs end inside the film: shoulders above, diaphragm below (soft tissue beside a long bone runs off it)
    margin = _PAIR_MARGIN * labels.shape[0]
    if min(r1.start, r2.start) < margin or max(r1.stop, r2.stop) > labels.shape[0] - margin:
        return False
    rows = slice(max(r1.start, r2.start), min(r1.stop, r2.stop))
    mid = image[rows, c1.stop : max(c2.start, c1.stop + 1)]
    # the darker lung: the other may be largely consolidated (brighter than the mediastinum)
    lung_level = min(float(np.median(image[one])), float(np.median(image[two])))
    return mid.size > 0 and float(np.median(mid)) > lung_level


class _Ranks:
    """Ranks (share of search pixels at or below a value) from the sorted search image.

    The zone correction, the diaphragm step and the mirror axis work in rank units, so they stay unchanged under any
    monotone intensity transform, as the quantile levels do. ``sorted`` is the sorted search image itself (the
    full-resolution refinement turns rank levels into one intensity threshold per row with it).
    """

    def __init__(self, sorted_work: np.ndarray) -> None:
        self.sorted = sorted_work

    def __call__(self, x: Any) -> np.ndarray:
        flat = np.asarray(x).ravel()
        # scattered queries straight into the table (~64 KiB, cache-resident): sorting the queries first to walk the
        # table in order costs more than it saves (about 2.5x slower at 2,000 queries, 1.5x at 40,000)
        counts = np.searchsorted(self.sorted, flat, side="right")
        return (counts / np.float32(self.sorted.size)).astype(np.float32).reshape(np.shape(x))


@dataclass
class _Grid:
    """One image's search grid and what the steps share.

    Args:
        content: (h, w) padding-cropped full-resolution image (normalised when ``border_brightening``).
        work: (h / f, w / f) block-averaged, rib-suppressed search image.
        f: block size of the search grid, pixels.
        rib_len: length of the vertical rib-suppressing opening at full resolution, pixels.
        gain: full-resolution brightening field, or None.
    """

    content: np.ndarray
    work: np.ndarray
    f: int
    rib_len: int
    gain: np.ndarray | None
    sorted_work: np.ndarray | None = None
    ranks: _Ranks | None = None
    work_rank: np.ndarray | None = None
    ramp: np.ndarray | None = None  # the zone-corrected search image (``work_rank`` minus the trend)
    sorted_ramp: np.ndarray | None = None

    def image_of(self, lung: _Lung) -> tuple[np.ndarray, np.ndarray]:
        """The search image a lung was found on and its sorted values (the zone-corrected one when it has a slope)."""
        return (self.ramp, self.sorted_ramp) if lung.slope else (self.work, self.sorted_work)


def _make_grid(content: np.ndarray, p: PBTSegParams) -> _Grid:
    """Step 0: the block-averaged, rib-suppressed search image (optionally brightened outside the central box)."""
    h, w = content.shape
    f = max(1, int(round(min(h, w) / p.search_size)))
    rib_len = int(round(p.rib_suppression * h))
    work = _vertical_opening(_block_mean(content, f), int(round(p.rib_suppression * h / f)))
    gain = None
    if p.border_brightening:
        lo_v, hi_v = float(content.min()), float(content.max())
        content = (content - lo_v) / max(hi_v - lo_v, 1e-12)
        work = (work - lo_v) / max(hi_v - lo_v, 1e-12) * _brightening_field(work.shape, p.brightening_gain)
        if f > 1:
            gain = _brightening_field(content.shape, p.brightening_gain)
    return _Grid(content, work, f, rib_len, gain)


def _argsort_float32(a: np.ndarray) -> np.ndarray:
    """Indices that sort a finite float32 array (flattened), by a two-pass radix sort of its bits.

    The float bits map to unsigned keys of the same order (negative values: all bits flipped; others: the sign bit
    set); numpy's stable argsort of 16-bit keys is a radix sort, so sorting by the low and then (stably) by the high
    half of the key is an exact argsort, about 3x faster than ``np.argsort`` of the floats. Ties may come out in
    another order than ``np.argsort``'s (which does not fix it either); the sorted values are the same.
    """
    bits = a.ravel().view(np.uint32)
    key = np.where(bits >= np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    order = np.argsort(key.astype(np.uint16), kind="stable")
    return order[np.argsort((key >> 16).astype(np.uint16)[order], kind="stable")]


def _rank_grid(grid: _Grid) -> None:
    """One sort of the search image (kept as the order, which also ranks the image itself) serves the search's
    levels, the rank lookups and the edge-level scan."""
    work = grid.work
    work_order = _argsort_float32(work) if work.dtype == np.float32 else np.argsort(work, axis=None)
    sorted_work = grid.sorted_work = work.ravel()[work_order]
    grid.ranks = _Ranks(sorted_work)
    # rank of each sorted value = 1 + index of the last value equal to it (the end of its run of ties): one linear
    # pass, where a binary search of every value cost about 3x more
    run_end = np.empty(work.size, bool)
    np.not_equal(sorted_work[1:], sorted_work[:-1], out=run_end[:-1])
    run_end[-1] = True
    ends = np.flatnonzero(run_end) + 1
    counts = np.empty(work.size, np.int64)
    counts[work_order] = np.repeat(ends, np.diff(ends, prepend=0))
    grid.work_rank = (counts / np.float32(work.size)).astype(np.float32).reshape(work.shape)  # ranks(work)


def _zone_correction(grid: _Grid, best: dict[int, _Lung], p: PBTSegParams) -> None:
    """Step 2 (``PBTSegParams.zone_correction``): the search repeated on the rank image minus the lungs' vertical
    brightness trend; a corrected lung replaces the first one only if it contains most of it and does not spread
    sideways or upward. In place on ``best``; sets ``grid.ramp``."""
    slope = _zone_trend(grid.work_rank, best, p.max_zone_slope)
    if slope <= 0:
        return
    work = grid.work
    grid.ramp = grid.work_rank - (slope * np.arange(work.shape[0], dtype=np.float32))[:, None]
    margin_r, margin_c = 0.05 * work.shape[0], 0.05 * work.shape[1]
    # the corrected lungs are at least as large as the first ones: start a little below their levels
    start = min(b.quantile for b in best.values()) - 2 * p.quantile_step
    grid.sorted_ramp = np.sort(grid.ramp, axis=None)
    for side, lung in _search(grid.ramp, p, start, grid.sorted_ramp).items():
        first = best.get(side)
        if first is not None:
            # the corrected lung may reach further down (the lower zones), not leak sideways or upward
            (fr, fc), (sr_, sc_) = _box(first.mask), _box(lung.mask)
            inside = (
                sc_.start >= fc.start - margin_c and sc_.stop <= fc.stop + margin_c and sr_.start >= fr.start - margin_r
            )
            if not inside or np.count_nonzero(lung.mask & first.mask) < 0.5 * first.area:
                continue
        lung.slope = slope
        best[side] = lung


def _search_steps(grid: _Grid, best: dict[int, _Lung], p: PBTSegParams) -> dict[int, list[_Lung]]:
    """Steps 1-4 on the search grid after the first search: zone correction, neck cut, edge-strength level and the
    pieces of each lung. In place on ``best``; returns the pieces found for each side."""
    if p.zone_correction:
        _zone_correction(grid, best, p)
    if p.neck_cut > 0:
        radius = max(1, int(round(p.neck_cut * min(grid.work.shape))))
        for side, lung in list(best.items()):
            best[side] = _cut_necks(lung, radius, side, p)
    if p.edge_level:
        gy, gx = np.gradient(grid.work_rank)
        grad = np.hypot(gy, gx)
        for side, lung in list(best.items()):
            lung.k_side = side
            # a lung from the zone-corrected search lives on that search's image (same slope)
            img, img_sorted = grid.image_of(lung)
            best[side] = _edge_level(img, lung, grad, p, img_sorted)
    extra: dict[int, list[_Lung]] = {}
    if p.join_pieces > 0:
        for side, lung in best.items():
            extra[side] = _pieces(grid.image_of(lung)[0], lung, p)
    return extra


def _diaphragm_step(grid: _Grid, m: np.ndarray, p: PBTSegParams) -> None:
    """Step 5 (``PBTSegParams.diaphragm_reach``), in place on a full-resolution lung mask: the rib-suppressed image
    as the search saw it, on a window around the lung and the reach below it."""
    h = m.shape[0]
    f, rib_len = grid.f, grid.rib_len
    reach, k = int(round(p.diaphragm_reach * h)), max(1, int(round(0.01 * h)))
    sr, sc = _box(m)
    pad = rib_len + f + k
    wr = slice(max(sr.start - pad, 0), min(sr.stop + reach + pad, h))
    wc = slice(max(sc.start - f, 0), min(sc.stop + f, m.shape[1]))
    win = grid.content[wr, wc]
    smooth = _vertical_opening(ndimage.uniform_filter(win, size=f | 1, mode="nearest") if f > 1 else win, rib_len)
    m[wr, wc] = _to_diaphragm(smooth, m[wr, wc], reach, k, grid.ranks)


def _hull_step(m: np.ndarray, side: int, fill_holes: bool) -> np.ndarray:
    """Step 6 (``PBTSegParams.lateral_hull``): the lateral hull, then holes filled on the lung's box (one pixel of
    margin: labelling the whole background costs more)."""
    m = _lateral_hull(m, side)
    if fill_holes:
        br, bc = _box(m)
        br = slice(max(br.start - 1, 0), br.stop + 1)
        bc = slice(max(bc.start - 1, 0), bc.stop + 1)
        m[br, bc] = _fill_holes(m[br, bc])
    return m


def _full_resolution_lung(grid: _Grid, parts: list[_Lung], side: int, p: PBTSegParams) -> np.ndarray:
    """One lung at full resolution: each part re-thresholded around its search-grid mask, the parts bridged (step
    4), spurs removed, then the diaphragm (step 5) and lateral hull (step 6) steps. Returns a bool mask of
    ``grid.content``'s shape (may be empty)."""
    h, w = grid.content.shape
    if grid.f == 1:  # the search grid is the image (the zone correction's ranks are already in the level)
        masks = [_fill_holes(x.mask) if p.fill_holes else x.mask for x in parts]
    else:
        masks = [_refine(grid.content, x, grid.f, grid.rib_len, grid.gain, p.fill_holes, grid.ranks) for x in parts]
    m = _bridge(masks[0], masks[1:]) if len(masks) > 1 else masks[0]
    if p.spur_removal > 0 and m.any():
        m = _remove_spurs(m, max(1, int(round(p.spur_removal * min(h, w)))))
    if p.diaphragm_reach > 0 and m.any():
        _diaphragm_step(grid, m, p)
    if p.lateral_hull and m.any():
        m = _hull_step(m, side, p.fill_holes)
    return m


def _dome_targets(rank: np.ndarray, mask: np.ndarray, reach: int, k: int, min_step: float) -> np.ndarray | None:
    """Per column of a search-grid lung (its columns in order): the row of the dome edge below the lung's bottom,
    or None when the lung's lower border already lies on the dome (see ``PBTSegParams.dome_reach``).

    Args:
        rank: (h, w) rank image of the search grid (rib-suppressed, block-averaged).
        mask: (h, w) bool lung on the search grid.
        reach: longest extension, grid rows.
        k: half-length, grid rows, of the vertical step ``rank[r + k] - rank[r - k]`` that marks an edge.
        min_step: smallest step, in ranks, that counts as the dome edge.
    """
    h = rank.shape[0]
    cols = np.flatnonzero(mask.any(axis=0))
    bottom = h - 1 - mask[::-1, cols].argmax(axis=0)
    offs = np.arange(-k, reach + 1)
    rr = bottom[None, :] + offs[:, None]
    ok = (rr + k < h) & (rr - k >= 0)
    rr = np.clip(rr, k, h - 1 - k)
    above, below = rank[rr - k, cols[None, :]], rank[rr + k, cols[None, :]]
    step = np.where(ok, below - above, -np.inf)
    # a step counts as the dome edge only when it takes the column most of the way from the lung's level up to the
    # brightest tissue below it within the reach (the abdomen): an opacity's own lower edge rises only part of the way
    lung_level = float(np.median(rank[mask]))
    below_max = np.maximum.accumulate(np.where(ok, below, -np.inf)[::-1], axis=0)[::-1]
    share = (below - lung_level) / np.maximum(below_max - lung_level, 1e-6)
    # below the bottom, the path down to the edge holds nothing as bright as the tissue under the edge: a step inside
    # the abdomen (under a gas bubble, at a collimation border) is reached only through bright tissue
    path = np.maximum.accumulate(np.where(offs[:, None] > 0, rank[rr, cols[None, :]], 0.0), axis=0)
    dome = ok & (step >= min_step) & (share >= 0.5) & ((offs[:, None] <= k) | (path < below - 0.1))
    found = dome.any(axis=0)
    # a dome edge at the lung's own bottom: the column already reaches the diaphragm and stays as it is
    good = found & ~dome[offs <= k].any(axis=0)
    if np.count_nonzero(good) < 0.3 * cols.size:
        return None
    pick = np.where(dome & (offs[:, None] > k), step, -np.inf).argmax(axis=0)  # the strongest dome edge below
    target = np.where(good, bottom + offs[pick], bottom)
    x = np.flatnonzero(found)
    filled = np.interp(np.arange(cols.size), x, target[x]).round().astype(np.intp)
    target = np.where(found, target, np.maximum(filled, bottom))
    target = ndimage.median_filter(target, size=max(3, (cols.size // 8) | 1), mode="nearest")
    return np.maximum(target, bottom)


def _dome_step(view: np.ndarray, grid: _Grid, p: PBTSegParams) -> None:
    """Step 9 (``PBTSegParams.dome_reach``), in place on the label map: each lung whose lower border stops above a
    clear dome edge is extended down to it (on the search grid, interpolated to full resolution), then its lateral
    hull is taken again."""
    f, rank = grid.f, grid.work_rank
    hg, wg = rank.shape
    reach = max(2, int(round(p.dome_reach * hg)))
    k = max(1, int(round(0.015 * hg)))
    for side in (1, 2):
        full = view == side
        if not full.any():
            continue
        mg = _block_mean(full[: hg * f, : wg * f].astype(np.float32), f) > 0.5
        if np.count_nonzero(mg) < 16:
            continue
        cols = np.flatnonzero(mg.any(axis=0))
        target = _dome_targets(rank, mg, reach, k, 0.15)
        if target is None:
            continue
        # grid row i covers full rows i*f .. i*f + f - 1: the edge lies at the middle of the step
        fcols = np.flatnonzero(full.any(axis=0))
        t_full = np.interp(fcols + 0.5, (cols + 0.5) * f, (target + 0.5) * f)
        fbottom = view.shape[0] - 1 - full[::-1, fcols].argmax(axis=0)
        r = np.arange(view.shape[0])[:, None]
        add = (r > fbottom[None, :]) & (r < t_full[None, :])
        sub = view[:, fcols]
        sub[add & (sub == 0)] = side
        view[:, fcols] = sub
        if p.lateral_hull:
            view[_lateral_hull(view == side, side) & (view == 0)] = side


def _partner_floor(view: np.ndarray, gap: float, hull: bool) -> None:
    """Step 10 (``PBTSegParams.partner_floor``), in place on the label map: the patient's right lung (label 1), when
    its lower border ends well above the partner's, is extended down to the partner's lower border mirrored.

    Args:
        view: (H, W) label map with both lungs.
        gap: smallest gap between the two lungs' lowest rows, as a fraction of the height.
        hull: take the lateral hull of the extended lung again (``PBTSegParams.lateral_hull``).
    """
    one, two = view == 1, view == 2
    if not one.any() or not two.any():
        return
    h, w = view.shape
    cols = np.flatnonzero(one.any(axis=0))
    bottom = h - 1 - one[::-1, cols].argmax(axis=0)
    cols2 = np.flatnonzero(two.any(axis=0))
    bottom2 = h - 1 - two[::-1, cols2].argmax(axis=0)
    if bottom.max() >= bottom2.max() - gap * h:
        return
    both = one.any(axis=1) & two.any(axis=1)
    if not both.any():
        return
    # mirror axis: the median midpoint of the two lateral borders over the rows both lungs hold (as step 7)
    axis2 = int(round(float(np.median(one[both].argmax(axis=1) + w - two[both, ::-1].argmax(axis=1))))) - 1
    floor = np.full(w, -1)
    floor[cols2] = bottom2
    mc = axis2 - cols
    target = np.where((mc >= 0) & (mc < w), floor[np.clip(mc, 0, w - 1)], -1)
    # columns without a mirrored partner column: the nearest that has one
    have = np.flatnonzero(target >= 0)
    if have.size < 0.5 * cols.size:
        return
    target = np.interp(np.arange(cols.size), have, target[have])
    r = np.arange(h)[:, None]
    sub = view[:, cols]
    sub[(r > bottom[None, :]) & (r <= target[None, :]) & (sub == 0)] = 1
    view[:, cols] = sub
    if hull:
        view[_lateral_hull(view == 1, 1) & (view == 0)] = 1


def _mirror_step(view: np.ndarray, grid: _Grid, info: dict, p: PBTSegParams) -> None:
    """Step 7 (``PBTSegParams.mirror_completion``), in place on the label map and ``info``."""
    if len(info["lungs"]) == 1 and _opaque_partner(view, grid.content):
        # one lung found and the other side opaque (a white-out): the missing lung is the found one's mirror image
        found_side = int(view.max())
        # the axis from bands of rows: edges without a partner (the clear lung's, a lesion's) mislead some bands only
        axis2 = _banded_axis(grid.content, _box(view > 0)[0], grid.ranks, p.mirror_bands)
        _mirror_complete(view, p.mirror_completion, axis2)
        if found_side == 2 and (view == 1).any():
            # the patient's right lung made from the left one's mirror image carries the heart's notch, which the
            # right lung does not have: its medial border is filled out to its convex hull (the mirror-image
            # hull step, on the medial side)
            view[_lateral_hull(view == 1, 2) & (view == 0)] = 1
        info["lungs"] = [1, 2]
        info["mirrored"] = True
    elif len(info["lungs"]) == 2:
        _mirror_complete(view, p.mirror_completion)


def pbtseg(image: Any, params: PBTSegParams | None = None, **kwargs: Any) -> tuple[np.ndarray, dict]:
    """Segment the two lungs of a frontal chest X-ray without training (progressive binary thresholding).

    Args:
        image: (H, W) or (1, H, W) numpy array or torch tensor, any real dtype and intensity range, bright bone
            (MONOCHROME2 look), in the bundle's orientation (column 0 = image left = patient right).
        params: a :class:`PBTSegParams`; keyword arguments override single fields (e.g. ``max_area=0.2``).

    Returns:
        ``(labels, info)``: labels is an (H, W) uint8 map, 0 background, 1 the lung on the image's left,
        2 the lung on the image's right; info is a dict with ``found`` (at least one lung), ``left_found``,
        ``right_found``, ``lungs`` (list of found labels), ``quantiles`` (threshold quantile per found lung),
        ``reason`` (why nothing was found, else "") and ``shape``.

    Never raises for a valid 2D numeric image: a non-chest-X-ray, an image under 32 pixels or a failed search gives
    an empty map and
    ``found=False``. Raises ``ValueError`` only for inputs that are not a 2D numeric image.
    """
    p = params or PBTSegParams()
    if kwargs:
        p = PBTSegParams(**{**asdict(p), **kwargs})
    a = _as_2d_float(image)
    labels = np.zeros(a.shape, np.uint8)
    info: dict[str, Any] = {
        "found": False,
        "left_found": False,
        "right_found": False,
        "lungs": [],
        "quantiles": {},
        "reason": "",
        "shape": tuple(a.shape),
    }
    r0, r1, c0, c1 = _content_box(a) if p.crop_padding else (0, a.shape[0], 0, a.shape[1])
    if min(r1 - r0, c1 - c0) < 32:
        info["reason"] = "image is uniform or smaller than 32 pixels after cropping constant borders"
        return labels, info
    grid = _make_grid(a[r0:r1, c0:c1], p)
    if float(grid.work.max()) == float(grid.work.min()):
        info["reason"] = "image has no contrast"
        return labels, info
    _rank_grid(grid)
    best = _search(grid.work, p, sorted_work=grid.sorted_work)  # step 1: the progressive thresholding
    if not best:
        info["reason"] = "no component passed the lung-shape tests at any threshold"
        return labels, info
    extra = _search_steps(grid, best, p)
    view = labels[r0:r1, c0:c1]
    for side in sorted(best):
        m = _full_resolution_lung(grid, [best[side]] + extra.get(side, []), side, p)
        if not m.any():
            continue
        view[m & (view == 0)] = side
        info["lungs"].append(side)
        info["quantiles"][side] = round(best[side].quantile, 4)
    if p.dome_reach > 0 and info["lungs"]:
        _dome_step(view, grid, p)
    if p.partner_floor > 0 and len(info["lungs"]) == 2:
        _partner_floor(view, p.partner_floor, p.lateral_hull)
    if p.mirror_completion:
        _mirror_step(view, grid, info, p)
    if p.require_pair and not _is_chest(view, grid.content):  # step 8
        view[:] = 0
        info["lungs"], info["quantiles"] = [], {}
        info["reason"] = "no pair of lungs about a brighter mediastinum (not a frontal chest X-ray?)"
    if p.medial_fill > 0 and info["lungs"]:
        _medial_fill(view, p.medial_fill, p.medial_rows)  # step 13
    info["left_found"], info["right_found"] = 1 in info["lungs"], 2 in info["lungs"]
    info["found"] = bool(info["lungs"])
    if not info["found"] and not info["reason"]:
        info["reason"] = "the lung candidates vanished at full resolution"
    return labels, info
