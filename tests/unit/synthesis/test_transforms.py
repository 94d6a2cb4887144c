"""Texture anomaly synthesis: properties of RandTextureAnomaly / RandTextureAnomalyd (small images, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate

from bundle.synthesis.transforms import RandTextureAnomaly, RandTextureAnomalyd
from bundle.synthesis.transforms import RandTextureAnomaly as ExportedArray
from bundle.synthesis.transforms import RandTextureAnomalyd as ExportedDict
from tests.synthesis_inputs import SIZE, check_properties, cxr_like, ellipse_lungs


def test_exported_from_transforms():
    assert ExportedArray is RandTextureAnomaly and ExportedDict is RandTextureAnomalyd


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_array_types_shapes_and_properties(kind):
    img = cxr_like(SIZE)[None]
    lung = ellipse_lungs(SIZE)[None]
    x = {
        "numpy": img,
        "torch": torch.from_numpy(img),
        "meta": MetaTensor(torch.from_numpy(img), meta={"filename_or_obj": "a.png"}),
    }[kind]
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
@pytest.mark.parametrize(
    "image", [np.zeros((SIZE, SIZE), np.float32), np.ones((SIZE, SIZE), np.float32), cxr_like(SIZE)]
)
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
    check_properties(
        np.asarray(src["image"])[0], src["lung"][0], np.asarray(d["image"])[0], np.asarray(d["anomaly_mask"])[0]
    )


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
    for x, y in zip(oa, ob, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_dict_missing_keys():
    with pytest.raises(KeyError, match="lung"):
        RandTextureAnomalyd()({"image": cxr_like(SIZE)[None]})
    assert RandTextureAnomalyd(allow_missing_keys=True)({"lung": 1}) == {"lung": 1}


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
