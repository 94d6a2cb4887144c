"""PBTSeg: API contract, accuracy over a robustness set of phantoms, non-chest inputs, the dictionary transform."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from bundle.data.phantoms import STORAGE_VARIANTS, as_stored, make_phantom
from bundle.evaluation.lung_dice import labels_swapped, zone_dice
from bundle.evaluation.metrics import dice
from bundle.io import read_image, write_nifti, write_png
from bundle.lungs.pbtseg import CORE_ONLY, PBTSegParams, _box, _has_strip, _medial_fill, pbtseg
from tests.dicom_files import write_dicom_monochrome1


def _pad(img, lung, top, bottom, left, right, value=0.0):
    return (
        np.pad(img, ((top, bottom), (left, right)), constant_values=value),
        np.pad(lung, ((top, bottom), (left, right))),
    )


def _rotate(img, lung, degrees):
    return (
        ndimage.rotate(img, degrees, reshape=False, order=1, mode="constant", cval=0.0),
        ndimage.rotate(lung, degrees, reshape=False, order=0, mode="constant", cval=0),
    )


def robustness_cases(tmp_path):
    """(name, image, true lung map) over exposure, size, padding, rotation and file formats."""
    cases = []
    base = {seed: make_phantom(256, seed=seed, diseased=seed == 3) for seed in range(6)}
    for seed, ph in base.items():
        cases.append((f"256 seed {seed}" + (" diseased" if seed == 3 else ""), ph.image, ph.lung))
    ph = base[1]
    for g in (0.6, 1.6):
        cases.append((f"gamma {g}", ph.image**g, ph.lung))
    cases.append(("contrast x0.4 (0.3..0.7)", 0.3 + 0.4 * ph.image, ph.lung))
    cases.append(("contrast x1.5, clipped", np.clip((ph.image - 0.5) * 1.5 + 0.5, 0, 1), ph.lung))
    cases.append(("uint16 storage", (ph.image * 65535).astype(np.uint16), ph.lung))
    noisy = ph.image + np.random.default_rng(0).normal(0, 0.03, ph.image.shape).astype(np.float32)
    cases.append(("extra noise sd 0.03", np.clip(noisy, 0, 1), ph.lung))
    for size in (128, 512, 1024):
        big = make_phantom(size, seed=5)
        cases.append((f"{size} px", big.image, big.lung))
    rect = make_phantom((320, 256), seed=6)
    cases.append(("320x256 (portrait)", rect.image, rect.lung))
    ph = base[2]
    cases.append(("black border 10%", *_pad(ph.image, ph.lung, 26, 26, 26, 26)))
    cases.append(("letterbox padding", *_pad(ph.image, ph.lung, 0, 0, 64, 64)))
    cases.append(("white border 5%", *_pad(ph.image, ph.lung, 13, 13, 13, 13, value=1.0)))
    for deg in (-10, 10):
        cases.append((f"rotated {deg} deg", *_rotate(ph.image, ph.lung, deg)))
    ph = base[0]
    write_png(tmp_path / "cxr.png", ph.image)
    cases.append(("PNG 8-bit file", read_image(tmp_path / "cxr.png")[0], ph.lung))
    write_dicom_monochrome1(tmp_path / "cxr.dcm", ph.image)
    img, meta = read_image(tmp_path / "cxr.dcm")
    assert "inverted" in meta["intensity"]
    cases.append(("DICOM MONOCHROME1 12-bit", img, ph.lung))
    write_nifti(tmp_path / "cxr.nii.gz", ph.image)
    cases.append(("NIfTI file", read_image(tmp_path / "cxr.nii.gz")[0], ph.lung))
    return cases


def test_accuracy_over_robustness_set(tmp_path, capsys):
    rows, all_d = [], []
    for name, image, truth in robustness_cases(tmp_path):
        labels, info = pbtseg(image)
        assert labels.shape == truth.shape and labels.dtype == np.uint8
        d1, d2 = dice(labels == 1, truth == 1), dice(labels == 2, truth == 2)
        swapped = dice(labels == 1, truth == 2) > 0.5 or dice(labels == 2, truth == 1) > 0.5
        rows.append((name, d1, d2, swapped))
        all_d += [d1, d2]
    with capsys.disabled():
        print("\nPBTSeg Dice over the robustness set (lung 1 = image left, lung 2 = image right)")
        print(f"{'case':<28} {'lung 1':>7} {'lung 2':>7}")
        for name, d1, d2, _ in rows:
            print(f"{name:<28} {d1:7.3f} {d2:7.3f}")
        print(
            f"{'mean':<28} {np.mean([r[1] for r in rows]):7.3f} {np.mean([r[2] for r in rows]):7.3f}"
            f"   (min {min(all_d):.3f})"
        )
    assert not any(r[3] for r in rows), "lung labels swapped"
    assert np.mean([r[1] for r in rows]) >= 0.90 and np.mean([r[2] for r in rows]) >= 0.90
    assert min(all_d) >= 0.75, rows


#: sha256 (first 16 hex digits) of (the input image, the label map) for fixed phantoms. The maps are those of
#: the PBTSeg of commit 4f829d3 (main after issue 10's first round, before its speed-up, which changed no pixel);
#: the diseased inputs and maps were re-hashed with the current PBTSeg (those maps proven identical on the old
#: inputs) when the demo lesion generator changed (issue 12). Issue 10's third round re-hashed the 12 diseased maps
#: that its mirror-completion changes (label-2 ratio, mirror axes, medial hull of a mirrored right lung) alter on
#: purpose; every healthy map is unchanged. Issue 10's dome completion and partner floor (``PBTSegParams.dome_reach``,
#: ``partner_floor``) re-hashed the 6 diseased maps they change here (no healthy one), after the full grid (40 seeds
#: x 256/512/1024 px) showed a gain. The film margin in the shape tests (``film_margin``) changes none of these maps.
#: The edge-strip test (``strip_radius``) re-hashed the 2 maps of seed 15 at 256 px (healthy and diseased, float): this
#: film has dark air gaps along both side edges, some of the search's candidates hold one and now fail, so a slightly
#: different level is kept (per-lung Dice healthy 0.935 / 0.958 -> 0.932 / 0.958, diseased 0.936 / 0.952 -> 0.936 /
#: 0.936); the full grid and the held-out seeds showed a gain (docs/lungs.md). The medial bite filling
#: (``medial_fill``) re-hashed the 31 of these 47 maps that it changes (healthy and diseased: the hilar vessels leave
#: bites in healthy lungs too), after the full grid and held-out seeds 80-159 showed a gain (docs/lungs.md).
#: Regenerate deliberately (and say so in the commit) when PBTSeg's maps or the phantoms change on purpose.
#: Keys: (size, seed, diseased, storage).
REFERENCE_MAP_HASHES = {
    (256, 0, False, "float"): ("035d2690adaebba7", "44df87c603803cde"),
    (256, 0, True, "float"): ("543dbaed8dda6ecf", "81bf14da81424bef"),
    (256, 1, False, "float"): ("451f001d7041c705", "75ff2c9c391ebb21"),
    (256, 1, True, "float"): ("74d4e76d646de490", "75ff2c9c391ebb21"),
    (256, 2, False, "float"): ("19365d5bba06ba75", "81b91487f73ce47e"),
    (256, 2, True, "float"): ("9d1c023aa47550cc", "c38d8ab85fc53b6c"),
    (256, 3, False, "float"): ("ef783044cfe1811a", "f036515e737985f9"),
    (256, 3, True, "float"): ("e3cf4e369c679ad6", "c71b3fe8c4435bbc"),
    (256, 4, False, "float"): ("2d784542813243d7", "d04e8ac6c7005c46"),
    (256, 4, True, "float"): ("9b0edfe48b264405", "41c547ee2c35f3b8"),
    (256, 5, False, "float"): ("7cdb723ada58ffb0", "3a3f91d357ae3f3a"),
    (256, 5, True, "float"): ("dac22fd07e0002a1", "ddd8070a83ebbcd0"),
    (256, 6, False, "float"): ("14b11692320f1729", "49ae710b1c038c83"),
    (256, 6, True, "float"): ("cb0705e80787156c", "204c0dd1cc3fee2c"),
    (256, 7, False, "float"): ("4db1a07123593bad", "71d8e08f73304e1f"),
    (256, 7, True, "float"): ("f0dba318c88c2b22", "2f2c72f86fa5953a"),
    (256, 8, False, "float"): ("c70166b9876173ec", "d8bf5ca9fd0e9beb"),
    (256, 8, True, "float"): ("767bdb7eecdf62a6", "5bc9b1665c4ccc9c"),
    (256, 9, False, "float"): ("48396105e39b7bba", "1c671c2ded332ee3"),
    (256, 9, True, "float"): ("338473b1b0bec621", "38210d25641cc931"),
    (256, 10, False, "float"): ("70d7bea33cd4b4dd", "67ef28a11fd1ed1f"),
    (256, 10, True, "float"): ("277737191688a60f", "e497977da9eeea03"),
    (256, 11, False, "float"): ("75b546e7a8939d6a", "33c215c480f58f6a"),
    (256, 11, True, "float"): ("6e1c51fc3b26e128", "ebb0e48d079b90a9"),
    (256, 12, False, "float"): ("4fd7b6f949f47c90", "74c9df6f03183c99"),
    (256, 12, True, "float"): ("13bd99126c1707af", "b316942ce16c9797"),
    (256, 13, False, "float"): ("c11c7bc3db4c64cb", "169dda7346eb1ea0"),
    (256, 13, True, "float"): ("fd287d63343ef903", "3d7634362b52fd6b"),
    (256, 14, False, "float"): ("4134a17dcec5b559", "09b63c2af2f8cec7"),
    (256, 14, True, "float"): ("7a5d77884a44d97c", "1e7bac574ba83358"),
    (256, 15, False, "float"): ("d0a00ad7ae0e6917", "23e822ca0857264a"),
    (256, 15, True, "float"): ("acb70dca10d40156", "3d90090f601f819d"),
    (256, 0, True, "8-bit"): ("7d194246fddcfc24", "1e8af1a3db3da1c2"),
    (256, 0, True, "16-bit"): ("c40bc1809226f88c", "81bf14da81424bef"),
    (256, 1, True, "8-bit"): ("4f14a215f4cf191a", "628f9fcefee825d4"),
    (256, 1, True, "16-bit"): ("c25a5322c9f51b10", "75ff2c9c391ebb21"),
    (256, 2, True, "8-bit"): ("5b678eee3e4ea0e0", "49778dc5f252c5e9"),
    (256, 2, True, "16-bit"): ("28be5f624098ebbc", "c38d8ab85fc53b6c"),
    (256, 3, True, "8-bit"): ("d9566f33b970112e", "1272cd75fb8fbcc0"),
    (256, 3, True, "16-bit"): ("4133e626fea8ce2f", "c71b3fe8c4435bbc"),
    (512, 0, False, "float"): ("3824f89fb0670e92", "c7fee3d439d28923"),
    (512, 0, True, "float"): ("43b815ba1569fac3", "9058662cd6d8a410"),
    (512, 1, False, "float"): ("62b4d5a4e866e433", "8baeca25271e7ec8"),
    (512, 1, True, "float"): ("ed994f1c8ad9102f", "8baeca25271e7ec8"),
    (512, 2, False, "float"): ("724ea1b30c0ce595", "ef8a078a07a8de00"),
    (512, 2, True, "float"): ("036ad1027ec16922", "3669bda1aa537100"),
    (1024, 0, True, "float"): ("351f5a1b8e8e0302", "33b3f51b5dfe8857"),
}


def test_maps_identical_to_the_reference_implementation():
    """Fixed phantoms (healthy and diseased, 256/512/1024 px, float/8/16-bit) give exactly the reference maps."""
    inputs_changed, maps_changed = [], []
    for (size, seed, diseased, storage), (input_hash, map_hash) in REFERENCE_MAP_HASHES.items():
        image = as_stored(make_phantom(size, seed=seed, diseased=diseased).image, storage)
        if hashlib.sha256(image.tobytes()).hexdigest()[:16] != input_hash:
            inputs_changed.append((size, seed, diseased, storage))
            continue
        labels, _ = pbtseg(image)
        if hashlib.sha256(labels.tobytes()).hexdigest()[:16] != map_hash:
            maps_changed.append((size, seed, diseased, storage))
    # a changed phantom says nothing about PBTSeg: re-hash with an unchanged PBTSeg instead of hiding a map change
    assert not inputs_changed, f"the phantom generator changed the test images {inputs_changed}: regenerate the hashes"
    assert not maps_changed, f"label maps changed for {maps_changed}"


def test_monotone_intensity_changes_do_not_change_the_map():
    """Thresholds are quantiles of the image itself: gamma / linear contrast / dtype give identical maps."""
    img = make_phantom(128, seed=4).image
    ref, _ = pbtseg(img)
    assert ref.any()
    for variant in (img**0.7, 0.2 + 0.5 * img, (img * 255).astype(np.float64) + 1000):
        np.testing.assert_array_equal(pbtseg(variant)[0], ref)


@pytest.mark.parametrize(
    "name, image",
    [
        ("uniform", np.full((256, 256), 0.4, np.float32)),
        ("zeros uint8", np.zeros((200, 300), np.uint8)),
        ("noise", np.random.default_rng(0).random((256, 256), dtype=np.float32)),
        ("smooth noise", ndimage.gaussian_filter(np.random.default_rng(1).random((256, 256)), 4)),
        ("horizontal gradient", np.tile(np.linspace(0, 1, 256, dtype=np.float32), (256, 1))),
        ("vertical gradient", np.tile(np.linspace(0, 1, 256, dtype=np.float32)[:, None], (1, 256))),
        ("radial gradient", np.hypot(*np.mgrid[-1:1:256j, -1:1:256j]).astype(np.float32)),
        ("tiny", np.random.default_rng(2).random((5, 7))),
        ("nan", np.full((64, 64), np.nan, np.float32)),
    ],
)
def test_non_chest_inputs_give_an_empty_map_and_a_flag(name, image):
    labels, info = pbtseg(image)
    assert labels.shape == image.shape and not labels.any(), name
    assert info["found"] is False and info["reason"], info


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2D image"):
        pbtseg(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="numeric"):
        pbtseg(np.array([["a", "b"], ["c", "d"]]))


# ---- issue 10: the whole lung on hard phantoms (targets: per-lung Dice median >= 0.93, worst >= 0.85) ----------


def _grid(seeds, sizes, diseased: bool, **params):
    """(per-lung zone Dice rows, swapped count) over seeds x sizes, the storage variant cycling with the seed."""
    rows, swapped = [], 0
    for size in sizes:
        for i, seed in enumerate(seeds):
            ph = make_phantom(size, seed=seed, diseased=diseased)
            labels, _ = pbtseg(as_stored(ph.image, STORAGE_VARIANTS[i % len(STORAGE_VARIANTS)]), **params)
            rows += list(zone_dice(labels, ph.lung))
            swapped += labels_swapped(labels, ph.lung)
    return np.array(rows), swapped


def _report(title: str, d: np.ndarray) -> str:
    med, worst = np.median(d, axis=0), d.min(axis=0)
    return (
        f"{title}: n={len(d)} lungs; Dice median whole {med[0]:.3f} upper {med[1]:.3f} middle {med[2]:.3f} "
        f"lower {med[3]:.3f}; worst whole {worst[0]:.3f} lower {worst[3]:.3f}"
    )


def test_whole_lungs_on_hard_healthy_phantoms(capsys):
    d, swapped = _grid(range(200, 212), [256], diseased=False)
    with capsys.disabled():
        print("\n" + _report("healthy, 12 seeds, 256 px", d))
    assert swapped == 0
    assert np.median(d[:, 0]) >= 0.93 and d[:, 0].min() >= 0.85


def test_added_steps_reach_the_lower_zones(capsys):
    """The published core alone (no zone correction, edge level, diaphragm extension, lateral hull, dome completion,
    partner floor, mirror completion or pair test: PBTSeg before issue 10) misses lower-zone lung;
    the added steps recover it on the same images (fails on the core-only PBTSeg by construction of the test)."""
    seeds = range(300, 312)
    ours, _ = _grid(seeds, [256], diseased=False)
    base, _ = _grid(seeds, [256], diseased=False, **CORE_ONLY)
    sick, _ = _grid(seeds, [256], diseased=True)
    sick_base, _ = _grid(seeds, [256], diseased=True, **CORE_ONLY)
    with capsys.disabled():
        for t, d in (
            ("ours healthy", ours),
            ("core healthy", base),
            ("ours diseased", sick),
            ("core diseased", sick_base),
        ):
            print("\n" + _report(t, d), end="")
        print()
    assert np.mean(ours[:, 3]) > np.mean(base[:, 3]) + 0.01
    assert np.mean(sick[:, 3]) > np.mean(sick_base[:, 3]) + 0.01


@pytest.mark.slow
@pytest.mark.parametrize(
    "diseased",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.xfail(
                strict=True,
                reason="worst-case target not met (median is): lesions biting into the medial border and lung "
                "hidden under dense lobar consolidation only partly recovered, worst per-lung Dice 0.79 "
                "(README, Lung masks: limits)",
            ),
        ),
    ],
)
def test_targets_full_grid(diseased, capsys):
    """40 seeds x 256/512/1024 px, storage variants cycling (gamma 0.6/1.6, 8/12/16-bit, float)."""
    d, swapped = _grid(range(40), [256, 512, 1024], diseased=diseased)
    with capsys.disabled():
        print("\n" + _report(("diseased" if diseased else "healthy") + ", 40 seeds x 3 sizes", d))
    assert swapped == 0
    assert np.median(d[:, 0]) >= 0.93 and d[:, 0].min() >= 0.85


def test_restricted_masks_keep_lesions_at_the_lung_edge():
    """``restrict_to_lungs`` keeps pixels inside the dilated lung map: on diseased phantoms (lesions at the lung
    edge and in the lower zones) the map must hold more of each lesion than the core-only PBTSeg does, and never
    lose a lesion entirely (the core-only map does)."""
    from bundle.evaluation.postprocess import dilate_lungs

    kept = {"ours": [], "core": []}
    for seed in range(400, 412):
        ph = make_phantom(256, seed=seed, diseased=True)
        les = ph.lesion.astype(bool)
        for name, params in (("ours", {}), ("core", CORE_ONLY)):
            region = dilate_lungs(torch.from_numpy(pbtseg(ph.image, **params)[0][None])).numpy()[0].astype(bool)
            kept[name].append((region & les).sum() / max(les.sum(), 1))
    assert np.mean(kept["ours"]) > np.mean(kept["core"]) + 0.05, kept
    assert min(kept["ours"]) > 0.25, kept


def test_healthy_films_keep_their_lung_map():
    """Healthy phantoms on which a lung joins the soft tissue above the shoulder and beside the chest wall a few levels
    above its own: that joined region passed the published shape tests, the search kept it, and the pair test then
    left the film without any map (seeds 89 and 148 here before ``film_margin``), so it got no synthetic anomaly in
    training. Every film of these 80 must keep both lungs."""
    poor = []
    for seed in range(80, 160):
        ph = make_phantom(256, seed=seed)
        labels, info = pbtseg(as_stored(ph.image, STORAGE_VARIANTS[seed % len(STORAGE_VARIANTS)]))
        worst = min(dice(labels == k, ph.lung == k) for k in (1, 2))
        if not info["found"] or worst < 0.8:
            poor.append((seed, round(worst, 3), info["reason"]))
    assert not poor, poor


@pytest.mark.parametrize("size, seed", [(256, 256), (512, 91)])
def test_no_lung_leaks_along_the_film_edge(size, seed):
    """Healthy films on which a lung joins the air gap beside the arm, a thin strip along the film's side edge, at a
    level that passes the published shape tests and the film margin: the lateral hull widened the strip into a band
    and mirror completion copied it to the partner (both lungs 0.76-0.83 before ``strip_radius``)."""
    ph = make_phantom(size, seed=seed)
    labels, info = pbtseg(as_stored(ph.image, STORAGE_VARIANTS[seed % len(STORAGE_VARIANTS)]))
    assert info["found"], info["reason"]
    assert min(dice(labels == k, ph.lung == k) for k in (1, 2)) >= 0.9


def test_strip_test_needs_a_long_thin_part_at_the_film_edge():
    """``_has_strip`` on a lung-like ellipse (128 px grid): a thin strip along the image's side edge, joined to the
    lung, counts; the same strip well inside the image (a lung's own thin part beside an opacity) does not."""
    p = PBTSegParams()
    y, x = np.mgrid[0:128, 0:128]
    lung = ((y - 45) / 30.0) ** 2 + ((x - 35) / 20.0) ** 2 <= 1
    at_edge, inside = lung.copy(), lung.copy()
    at_edge[20:110, 2:8] = True
    at_edge[40:44, 2:20] = True
    inside[60:110, 30:36] = True  # 35 rows below the lung, 18 rows from the bottom edge

    def has(m):
        box = _box(m)
        return _has_strip(m[box], box, m.shape, p)

    assert has(at_edge)
    assert not has(lung)
    assert not has(inside)


def test_medial_fill_fills_deep_bites_above_the_heart_only():
    """``_medial_fill`` on a lung-like ellipse (lung 1, medial side = image right, 256 px wide): a deep bite in the
    upper rows is filled out to the hull; a shallow one (under 3 % of the width) and a deep one in the lowest third
    (where the heart makes the medial border concave) stay."""
    y, x = np.mgrid[0:256, 0:256]
    lung = ((y - 120) / 90.0) ** 2 + ((x - 80) / 45.0) ** 2 <= 1
    deep, shallow, low = lung.copy(), lung.copy(), lung.copy()
    deep[70:100, 105:] = False  # 20 px deep at its deepest row (> 3 % of 256 = 7.7 px)
    shallow[70:100, 120:] = False  # 5 px deep
    low[175:200, 95:] = False  # deep, but in the lowest third of the rows (30..210)

    def filled(m):
        view = m.astype(np.uint8)
        _medial_fill(view, PBTSegParams().medial_fill, PBTSegParams().medial_rows)
        return view == 1

    assert filled(deep)[70:100].sum() > lung[70:100].sum() - 30  # the bite is back, the hull's chord aside
    assert (filled(shallow) == shallow).all()
    assert (filled(low) == low).all()
    assert (filled(lung) == lung).all()  # an ellipse is convex: nothing to fill


def test_opacity_at_the_mediastinum_stays_in_the_lung():
    """A diseased film whose lesions touch the mediastinum (the silhouette sign): every threshold's lung stops at the
    lesions' lateral edge and left a bite in the medial border (lung 1 at Dice 0.81 before ``medial_fill``)."""
    ph = make_phantom(256, seed=26, diseased=True)
    image = as_stored(ph.image, STORAGE_VARIANTS[26 % len(STORAGE_VARIANTS)])
    ours, without = pbtseg(image)[0], pbtseg(image, medial_fill=0.0)[0]
    assert dice(ours == 1, ph.lung == 1) >= 0.85
    assert dice(ours == 1, ph.lung == 1) > dice(without == 1, ph.lung == 1) + 0.03


def _lower_leg(size: int, seed: int) -> np.ndarray:
    """A radiograph-like lower leg: soft tissue either side of the tibia and fibula, collimated to the leg."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    cx = 0.5 + rng.uniform(-0.05, 0.05)
    half = 0.2 + 0.05 * np.sin(np.pi * y) + rng.uniform(-0.03, 0.03)
    soft = np.sqrt(np.clip(1 - ((x - cx) / half) ** 2, 0, 1))
    dens = 0.5 * soft + 0.6 * np.exp(-(((x - cx + 0.04) / 0.06) ** 8)) + 0.4 * np.exp(-(((x - cx - 0.12) / 0.025) ** 8))
    img = 1 - np.exp(-1.5 * dens)
    shutter = np.abs(x - cx) > half + rng.uniform(0.03, 0.08)
    img = np.where(shutter, 0.9, img) + rng.normal(0, 0.01, img.shape)
    return img.astype(np.float32)


def test_no_lungs_in_photographs_and_other_body_parts():
    from skimage import color, data

    images = {f"lower leg {s}": _lower_leg(256, s) for s in range(3)}
    for name in (
        "camera",
        "astronaut",
        "coins",
        "moon",
        "brick",
        "immunohistochemistry",
        "chelsea",
        "shepp_logan_phantom",
    ):
        im = getattr(data, name)()
        images[name] = color.rgb2gray(im[..., :3]) if im.ndim == 3 else im
    for name, im in images.items():
        labels, info = pbtseg(im)
        assert not labels.any() and not info["found"], name
