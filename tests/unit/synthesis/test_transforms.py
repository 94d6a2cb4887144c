"""Texture anomaly synthesis: properties of RandTextureAnomaly / RandTextureAnomalyd (small images, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor, list_data_collate
from scipy import ndimage as ndi

from bundle.synthesis.texture import (
    TextureAnomalyParams,
    lung_margin,
    soft_lung_mask,
    synthesize_texture_anomaly,
)
from bundle.synthesis.transforms import RandTextureAnomaly, RandTextureAnomalyd
from bundle.synthesis.transforms import RandTextureAnomaly as ExportedArray
from bundle.synthesis.transforms import RandTextureAnomalyd as ExportedDict

SIZE = 64


def ellipse_lungs(size: int, left=(0.5, 0.3, 0.3, 0.12), right=(0.5, 0.7, 0.3, 0.12)) -> np.ndarray:
    """Label map with up to two elliptical lungs, each (centre row, centre col, half height, half width) as fractions."""
    yy, xx = np.mgrid[:size, :size] / size
    lung = np.zeros((size, size), np.uint8)
    for label, e in ((1, left), (2, right)):
        if e is not None:
            cy, cx, ry, rx = e
            lung[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = label
    return lung


def cxr_like(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.4 + 0.3 * yy + 0.1 * np.sin(xx * 30) + 0.05 * rng.rand(size, size)
    return np.clip(img, 0, 1).astype(np.float32)


def check_properties(image: np.ndarray, lung: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    assert out.shape == image.shape and mask.shape == image.shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert (out >= image).all(), "an anomaly darkened the image"
    assert set(np.unique(mask)) <= {0, 1}
    m = lung_margin(image.shape)
    reach = ndi.maximum_filter((lung > 0).astype(np.uint8), size=2 * m + 1, mode="constant")
    assert not (mask.astype(bool) & (reach == 0)).any(), "mask outside the dilated lungs"
    assert (out[mask == 0] >= image[mask == 0]).all()


def test_exported_from_transforms():
    assert ExportedArray is RandTextureAnomaly and ExportedDict is RandTextureAnomalyd


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_array_types_shapes_and_properties(kind):
    img = cxr_like(SIZE)[None]
    lung = ellipse_lungs(SIZE)[None]
    x = {"numpy": img, "torch": torch.from_numpy(img), "meta": MetaTensor(torch.from_numpy(img), meta={"filename_or_obj": "a.png"})}[kind]
    t = RandTextureAnomaly(prob=1.0)
    t.set_random_state(0)
    out, mask = t(x, lung)
    assert type(out) is type(x) and type(mask) is type(x)
    if kind == "meta":
        assert out.meta["filename_or_obj"] == "a.png"
    out_np, mask_np = np.asarray(out), np.asarray(mask)
    assert out_np.shape == (1, SIZE, SIZE) and mask_np.dtype == np.float32
    check_properties(img[0], lung[0], out_np[0], mask_np[0])
    assert mask_np.any()


lung_spec = st.tuples(
    st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.floats(0.02, 0.6), st.floats(0.02, 0.6)
) | st.none()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), left=lung_spec, right=lung_spec, img_seed=st.integers(0, 1000), level=st.sampled_from(["cxr", "black", "white", "noise"]))
def test_properties_random_lungs_and_images(seed, left, right, img_seed, level):
    lung = ellipse_lungs(SIZE, left, right)
    image = {
        "cxr": cxr_like(SIZE, img_seed),
        "black": np.zeros((SIZE, SIZE), np.float32),
        "white": np.ones((SIZE, SIZE), np.float32),
        "noise": np.random.RandomState(img_seed).rand(SIZE, SIZE).astype(np.float32),
    }[level]
    out, mask, info = synthesize_texture_anomaly(image, lung, np.random.RandomState(seed))
    check_properties(image, lung, out, mask)
    if not lung.any():
        assert not mask.any() and info["reason"] == "no lung" and (out == image).all()
    assert info["anomaly"] == bool(mask.any())


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.tuples(st.floats(0.3, 0.7), st.floats(0.3, 0.7)),
    half=st.tuples(st.floats(0.2, 0.3), st.floats(0.2, 0.3)),
    widths=st.tuples(st.floats(0.09, 0.15), st.floats(0.09, 0.15)),
    one_lung=st.booleans(),
)
def test_mask_never_empty_for_realistic_lungs(seed, rows, half, widths, one_lung):
    left = (rows[0], 0.28, half[0], widths[0])
    right = None if one_lung else (rows[1], 0.72, half[1], widths[1])
    lung = ellipse_lungs(SIZE, left, right)
    for label in (1, 2):
        assert label == 2 and one_lung or (lung == label).mean() >= 0.03
    out, mask, info = synthesize_texture_anomaly(cxr_like(SIZE), lung, np.random.RandomState(seed))
    assert mask.any() and info["anomaly"] and info["area"] > 0


@pytest.mark.parametrize("kind", ["pa", "ap", "child"])
def test_properties_on_realistic_phantoms(kind):
    """The phantoms of every kind (breast shadows, collimation, markers, rotation): a non-empty anomaly inside the
    lungs' reach, lighten-only, and nearly all of the brightening in the mask (the benchmark's share outside it)."""
    from bundle.data.phantoms import make_phantom
    from bundle.synthesis.statistics import anomaly_statistics

    for seed in range(3):
        ph = make_phantom(96, seed=seed, kind=kind)
        out, mask, info = synthesize_texture_anomaly(ph.image, ph.lung, np.random.RandomState(seed))
        check_properties(ph.image, ph.lung, out, mask)
        assert mask.any() and info["anomaly"]
        stats = anomaly_statistics(ph.image, out, mask, ph.lung)
        assert stats["mean_in_mask"] > 0.05 and stats["outside_share"] < 0.15


def test_reproducible_with_set_random_state_and_seeds_differ():
    img, lung = cxr_like(SIZE)[None], ellipse_lungs(SIZE)[None]
    a = RandTextureAnomaly().set_random_state(7)
    b = RandTextureAnomaly().set_random_state(7)
    c = RandTextureAnomaly().set_random_state(8)
    for _ in range(3):
        (oa, ma), (ob, mb), (oc, _) = a(img, lung), b(img, lung), c(img, lung)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ma, mb)
        assert not np.array_equal(oa, oc)
    assert not np.array_equal(a(img, lung)[0], a(img, lung)[0]), "consecutive draws must differ"


@pytest.mark.parametrize(
    "lung",
    [
        np.zeros((SIZE, SIZE), np.uint8),  # no lung
        np.pad(np.ones((1, 1), np.uint8), ((30, 33), (30, 33))),  # a single pixel
        np.pad(np.full((2, 3), 2, np.uint8), ((0, SIZE - 2), (SIZE - 3, 0))),  # tiny, in a corner
        np.ones((SIZE, SIZE), np.uint8),  # the whole image (touches every border)
        ellipse_lungs(SIZE, (0.5, 0.02, 0.5, 0.1), (0.98, 0.98, 0.4, 0.2)),  # cut by the border
        ellipse_lungs(SIZE) * 127,  # other label values (binary 0/254 masks) count as lungs
    ],
)
@pytest.mark.parametrize("image", [np.zeros((SIZE, SIZE), np.float32), np.ones((SIZE, SIZE), np.float32), cxr_like(SIZE)])
def test_degenerate_inputs_never_hang_or_raise(lung, image):
    t = RandTextureAnomaly().set_random_state(1)
    ((out, mask, info),) = t.variants(image[None], lung[None], 1)
    check_properties(image, lung, out[0], mask[0])
    if not lung.any():
        assert info["reason"] == "no lung" and not mask.any()


def test_prob_zero_returns_image_and_empty_mask():
    img, lung = cxr_like(SIZE)[None], ellipse_lungs(SIZE)[None]
    out, mask = RandTextureAnomaly(prob=0.0)(img, lung)
    np.testing.assert_array_equal(out, img)
    assert not mask.any()


def test_stroke_counts_never_all_zero_and_bounded():
    # only zero counts possible except one value: the redraw must still terminate with strokes
    params = TextureAnomalyParams(stroke_counts=(0, 1), zero_stroke_prob=0.99)
    for seed in range(5):
        _, _, info = synthesize_texture_anomaly(cxr_like(SIZE), ellipse_lungs(SIZE), np.random.RandomState(seed), params)
        assert info["strokes"] >= 1


def test_soft_mask_support_and_scaling():
    lung = ellipse_lungs(128)
    soft = soft_lung_mask(lung)
    m = lung_margin(lung.shape)
    assert abs(m - 9) <= 1
    reach = ndi.maximum_filter(lung, size=2 * m + 1) > 0
    assert soft.max() <= 1.0 + 1e-6 and soft[lung > 0].min() > 0.5 and not soft[~reach].any()
    assert lung_margin((256, 256)) == 18 and abs(lung_margin((1024, 1024)) - 4 * 18) <= 2


def test_invalid_arguments():
    with pytest.raises(TypeError, match="unknown"):
        RandTextureAnomaly(brush_width=3)
    with pytest.raises(ValueError):
        RandTextureAnomaly(prob=2.0)
    with pytest.raises(ValueError):
        RandTextureAnomalyd(num_variants=(3, 1))
    with pytest.raises(ValueError, match="\\(1, H, W\\)"):
        RandTextureAnomaly()(np.zeros((SIZE, SIZE), np.float32), np.zeros((SIZE, SIZE), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        RandTextureAnomaly()(np.zeros((1, SIZE, SIZE), np.float32), np.zeros((1, 8, 8), np.uint8))


def test_user_brush_file(tmp_path):
    from PIL import Image

    tex = np.zeros((40, 60), np.uint8)
    tex[10:30:4, 5:55] = 255
    Image.fromarray(tex).save(tmp_path / "brush.png")
    t = RandTextureAnomaly(brush=str(tmp_path / "brush.png")).set_random_state(0)
    img, lung = cxr_like(SIZE)[None], ellipse_lungs(SIZE)[None]
    out, mask = t(img, lung)
    check_properties(img[0], lung[0], out[0], mask[0])
    assert mask.any()


def _sample(kind="numpy"):
    img, lung = cxr_like(SIZE)[None], ellipse_lungs(SIZE)[None]
    if kind == "meta":
        img = MetaTensor(torch.from_numpy(img), meta={"filename_or_obj": "x.png"})
    return {"image": img, "lung": lung, "label": 0}


def test_dict_single_sample():
    t = RandTextureAnomalyd(keys="image", prob=1.0).set_random_state(0)
    src = _sample("meta")
    d = t(src)
    assert isinstance(d, dict)
    np.testing.assert_array_equal(np.asarray(d["target"]), np.asarray(src["image"]))
    assert d["target"] is not src["image"] and d["label"] == 0 and d["lung"] is src["lung"]
    assert d["anomaly_meta"]["anomaly"] and d["anomaly_meta"]["area"] == pytest.approx(float(d["anomaly_mask"].mean()))
    assert isinstance(d["image"], MetaTensor) and isinstance(d["anomaly_mask"], MetaTensor)
    check_properties(np.asarray(src["image"])[0], src["lung"][0], np.asarray(d["image"])[0], np.asarray(d["anomaly_mask"])[0])


def test_dict_variants_healthy_copy_and_collation():
    t = RandTextureAnomalyd(num_variants=(1, 3), include_healthy=True).set_random_state(0)
    lengths = set()
    for _ in range(8):
        out = t(_sample())
        assert isinstance(out, list) and 2 <= len(out) <= 4
        lengths.add(len(out))
        healthy = out[0]
        np.testing.assert_array_equal(healthy["image"], healthy["target"])
        assert not healthy["anomaly_mask"].any() and healthy["anomaly_meta"]["anomaly"] is False
        for v in out[1:]:
            np.testing.assert_array_equal(v["target"], healthy["target"])
            assert v["anomaly_meta"]["anomaly"] and v["anomaly_mask"].any()
        assert not np.array_equal(out[1]["image"], out[0]["image"])
    assert len(lengths) > 1, "num_variants range was not sampled"
    batch = list_data_collate([t(_sample()), t(_sample())])
    n = batch["image"].shape[0]
    assert batch["image"].shape[1:] == (1, SIZE, SIZE) and batch["anomaly_mask"].shape == batch["image"].shape
    assert batch["target"].shape == batch["image"].shape and batch["anomaly_meta"]["area"].shape == (n,)


def test_dict_fixed_variants_and_reproducible():
    a = RandTextureAnomalyd(num_variants=2).set_random_state(3)
    b = RandTextureAnomalyd(num_variants=2).set_random_state(3)
    oa, ob = a(_sample()), b(_sample())
    assert len(oa) == 2
    for x, y in zip(oa, ob):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_dict_missing_keys():
    with pytest.raises(KeyError, match="lung"):
        RandTextureAnomalyd()({"image": cxr_like(SIZE)[None]})
    assert RandTextureAnomalyd(allow_missing_keys=True)({"lung": 1}) == {"lung": 1}


def test_larger_images_scale():
    size = 160
    img, lung = cxr_like(size), ellipse_lungs(size)
    out, mask, info = synthesize_texture_anomaly(img, lung, np.random.RandomState(0))
    check_properties(img, lung, out, mask)
    assert mask.any()


# ---- offline variants: `monai.bundle run synthesize` -----------------------------------------------------------


def test_offline_synthesize_job_resume_and_datalist(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from bundle.data.phantoms import make_phantom
    from bundle.io import read_image, read_labels, write_png
    from bundle.lungs.cache import lung_cache_path
    from bundle.preprocess.anomalies import (
        SyntheticAnomalyJob,
        offline_variant_datalist,
        synthesis_items,
    )

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "demo"  # published layout; one image in a subfolder, one test image that must be left alone
    for k, rel in enumerate(["train/healthy/a.png", "train/healthy/b.png", "train/healthy/site2/c.png", "train/healthy/d.png",
                             "test/healthy/t.png"]):
        ph = make_phantom(64, seed=k)
        write_png(root / rel, ph.image, bits=16)
        if k != 3:  # the lung cache has every map but d's: d falls back to PBTSeg
            write_png(lung_cache_path(root / rel, root, root / "lungs"), ph.lung)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "synthesize", "--config_file", str(repo / "configs/preprocess.json"),
           "--dataset_dir", str(root), "--num_workers", "2", "--progress", "false"]
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    syn = root / "synthetic"
    report = json.loads((syn / "synthesize_report.json").read_text())
    assert report["summary"]["done"] == 4 and report["summary"]["failed"] == 0
    sources = {Path(r["source"]).name: r["details"]["lung_source"] for r in report["records"]}
    assert sources == {"a.png": "cache", "b.png": "cache", "c.png": "cache", "d.png": "pbtseg"}
    items = synthesis_items(root, syn)
    assert all(1 <= it.extra["variants"] <= 3 for it in items) and len({it.extra["variants"] for it in items}) >= 1
    for it in items:
        healthy, _ = read_image(it.source)
        for k in range(it.extra["variants"]):
            v, m = it.outputs[2 * k], it.outputs[2 * k + 1]
            assert v.endswith(f"_v{k + 1}.png") and m.endswith(f"_v{k + 1}_mask.png") and "/synthetic/train/healthy/" in v
            img, mask = read_image(v)[0], read_labels(m)
            assert set(np.unique(mask)) <= {0, 1} and (mask.any() or it.source.endswith("d.png"))
            assert (img >= healthy - 1e-3).all() and np.abs(img - healthy)[mask == 0].mean() < 0.02
    assert (syn / "synthesize_qa.png").is_file() and (syn / "train/healthy/site2").is_dir()
    assert not list(syn.glob("test/**/*.png")), "only training images get variants"

    # resume: a deleted and a damaged output are redone identically, everything else is skipped
    first = Path(items[0].outputs[0])
    original = first.read_bytes()
    first.unlink()
    Path(items[1].outputs[1]).write_bytes(b"not a png")
    summary = SyntheticAnomalyJob(root, num_workers=0, progress=False).run()
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 2, 0)
    assert first.read_bytes() == original, "a rerun must reproduce the same variant"

    entries = offline_variant_datalist(root)
    assert len(entries) == sum(it.extra["variants"] for it in items)
    assert {e["target"] for e in entries} == {it.source for it in items}
    assert all(e["anomaly_mask"].endswith("_mask.png") and Path(e["image"]).is_file() for e in entries)
    only = offline_variant_datalist(root, images=[{"image": items[0].source}])
    assert {e["target"] for e in only} == {items[0].source}
    with pytest.raises(FileNotFoundError, match="run synthesize|monai.bundle run synthesize"):
        offline_variant_datalist(root, synthetic_dir=tmp_path / "none")


def test_float_lung_maps_and_variants_match_repeated_calls():
    # after MONAI's Resized the lung map is a float tensor: labels 1.0 / 2.0 must still work
    img = torch.from_numpy(cxr_like(SIZE)[None])
    lung = torch.from_numpy(ellipse_lungs(SIZE)[None].astype(np.float32))
    a = RandTextureAnomaly(prob=0.7).set_random_state(5)
    b = RandTextureAnomaly(prob=0.7).set_random_state(5)
    batch = a.variants(img, lung, 4)
    for out, mask, info in batch:
        ((o2, m2, i2),) = b.variants(img, lung, 1)
        assert torch.equal(out, o2) and torch.equal(mask, m2) and info == i2
        assert info["anomaly"] == bool(mask.any())


# ---- fidelity to the published code (ALGORITHM.md section 2) ----------------------------------------------


def test_stamp_count_law():
    """Stamps per stroke: min(100, max(1, int(length / spacing))), spacing = max(1, int(0.05 * width))."""
    from bundle.synthesis.texture import stamp_counts

    lengths = np.array([0.0, 3.9, 4.0, 7.99, 50.0, 399.0, 401.0, 1000.0])
    np.testing.assert_array_equal(stamp_counts(lengths, 80.0), [1, 1, 1, 1, 12, 99, 100, 100])  # spacing 4 px
    np.testing.assert_array_equal(stamp_counts(lengths, 50.0), [1, 1, 2, 3, 25, 100, 100, 100])  # spacing int(2.5) = 2
    np.testing.assert_array_equal(stamp_counts(lengths, 10.0), [1, 3, 4, 7, 50, 100, 100, 100])  # spacing max(1, 0) = 1
    np.testing.assert_array_equal(stamp_counts(lengths, 160.0), [1, 1, 1, 1, 6, 49, 50, 100])  # 512 px: spacing 8


def test_stamps_at_distinct_curve_samples():
    from bundle.synthesis.texture import DEFAULT_PARAMS, _stamp_points, stamp_counts

    t = np.linspace(0, 1, DEFAULT_PARAMS.curve_samples)[:, None]
    lengths = np.array([10.0, 120.0, 200.0, 900.0])
    curves = np.stack([np.hstack([t * 0 + k, t * L]) for k, L in enumerate(lengths)])  # straight, distinct points
    for width in DEFAULT_PARAMS.brush_widths:
        pts, per = _stamp_points(curves, lengths, width, DEFAULT_PARAMS, np.random.RandomState(0))
        np.testing.assert_array_equal(per, stamp_counts(lengths, width))
        assert len(pts) == per.sum()
        for k in range(len(lengths)):
            mine = pts[pts[:, 0] == k]
            assert len(mine) == per[k] and len(np.unique(mine[:, 1])) == per[k], "a curve sample was stamped twice"


def test_stroke_alpha_scales_a_after_b_c_d():
    """The 0.4 factor scales the stamped layer A in the composite; B (its blur) is made from unscaled A."""
    from dataclasses import replace

    from bundle.synthesis.texture import DEFAULT_PARAMS, _effects, _smooth

    assert (DEFAULT_PARAMS.stroke_alpha, DEFAULT_PARAMS.blur_alpha) == (0.4, 1.0)
    a = np.zeros((96, 96), np.float32)
    a[30:60, 20:70] = 0.6
    exact = replace(DEFAULT_PARAMS, alpha_levels=0)
    alpha, colour = _effects(a, 1.0, 50, replace(exact, composite_order=""), np.random.RandomState(0))
    np.testing.assert_allclose(alpha, 0.4 * a, atol=1e-6)
    alpha, _ = _effects(a, 1.0, 50, replace(exact, composite_order="B"), np.random.RandomState(0))
    b = _smooth(a, exact.blur_radius)
    np.testing.assert_allclose(alpha, 1 - (1 - 0.4 * a) * (1 - b), atol=1e-5)
    assert alpha[45, 45] > 0.4 * 0.6 + 0.5 * b[45, 45], "B must be composited at full strength"
    # B, C, D fade to black where A has no paint: the colour falls off outside the painted square
    _, colour = _effects(a, 1.0, 50, DEFAULT_PARAMS, np.random.RandomState(0))
    assert colour[45, 45] > 0.95 and colour[45, 12] < 0.5


def pinned_inputs(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A CXR-like image with dark lungs (softened edges) and its lung map, varied by ``k``."""
    lung = ellipse_lungs(size, (0.5, 0.3 - 0.02 * k, 0.3, 0.12), (0.5, 0.7, 0.32 - 0.03 * k, 0.13))
    dark = ndi.gaussian_filter((lung > 0).astype(np.float32), size / 64)
    return (cxr_like(size, k) * (1 - 0.55 * dark)).astype(np.float32), lung


# statistics of 160 draws (seeds 0..159) on fixed inputs at 128 px, pinned from this implementation when it was
# matched to the published code (benchmarks/bench_synthesis.py: every statistic within 4 % of the published
# one). Other seed sets of 160 draws give q10 within 10 % and the rest within 7 % of these, so a faster
# implementation that draws differently still passes, while a drift of the distribution does not.
PINNED = {"area_q10": 0.225, "area_median": 0.619, "area_q90": 1.041, "mean_in_mask": 0.259,
          "per_lung_pixel": 0.179, "outside_share": 0.046, "pieces_median": 2.0}


def test_statistics_pinned_on_fixed_seeds():
    from bundle.synthesis.statistics import anomaly_statistics, summarize_statistics

    inputs = [pinned_inputs(128, k) for k in range(4)]
    synth = RandTextureAnomaly()
    per = []
    for k in range(160):
        image, lung = inputs[k % 4]
        synth.set_random_state(k)
        out, mask = synth(image[None], lung[None])
        per.append(anomaly_statistics(image, out[0], mask[0], lung))
    got = summarize_statistics(per)
    print({k: round(v, 4) for k, v in got.items()})
    assert got["area_q10"] == pytest.approx(PINNED["area_q10"], rel=0.12)
    for key in ("area_median", "area_q90", "mean_in_mask", "per_lung_pixel"):
        assert got[key] == pytest.approx(PINNED[key], rel=0.08), key
    assert got["outside_share"] == pytest.approx(PINNED["outside_share"], abs=0.01)
    assert abs(got["pieces_median"] - PINNED["pieces_median"]) <= 1
    assert got["empty"] == 0


def test_brush_option_of_transform_and_job(tmp_path):
    from PIL import Image

    from bundle.preprocess.anomalies import SyntheticAnomalyJob
    from bundle.synthesis.brush import procedural_brush

    path = tmp_path / "texture.png"
    Image.fromarray((procedural_brush(seed=5) * 255).astype(np.uint8)).save(path)
    job = SyntheticAnomalyJob(dataset_dir=tmp_path, brush=str(path))
    assert job.synthesis["brush"] == str(path.absolute())
    assert "brush" not in SyntheticAnomalyJob(dataset_dir=tmp_path, brush=None).synthesis
    with pytest.raises(FileNotFoundError, match="brush"):
        SyntheticAnomalyJob(dataset_dir=tmp_path, brush=str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="disagree"):
        SyntheticAnomalyJob(dataset_dir=tmp_path, brush=str(path), synthesis={"brush": "other.png"})
    with pytest.raises(FileNotFoundError, match="'brush' option"):
        RandTextureAnomaly(brush=str(tmp_path / "missing.png"))
    # a file brush paints like the same texture given as an array
    img, lung = cxr_like(SIZE)[None], ellipse_lungs(SIZE)[None]
    from_file = RandTextureAnomaly(brush=str(path)).set_random_state(1)(img, lung)
    tex = np.asarray(Image.open(path), np.float32) / 255
    from_array = RandTextureAnomaly(brush=tex).set_random_state(1)(img, lung)
    np.testing.assert_allclose(from_file[0], from_array[0], atol=1e-4)
