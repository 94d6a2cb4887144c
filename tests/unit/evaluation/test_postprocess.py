"""Error maps, image scores and per-image anomaly masks on hand-made arrays."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from bundle.evaluation.operating_point import load_operating_point
from bundle.evaluation.postprocess import (
    AnomalyMapd,
    AnomalyMaskd,
    AnomalyScore,
    AnomalyScored,
    anomaly_mask,
    dilate_lungs,
    error_map,
    image_score,
)


def _pair(diffs, shape=(1, 2, 2)):
    """An image whose difference to a zero reconstruction is ``diffs``."""
    image = np.asarray(diffs, dtype=np.float32).reshape(shape)
    return image, np.zeros_like(image)


def test_error_map_is_squared_difference():
    image = np.array([[0.5, 0.2]], dtype=np.float32)
    recon = np.array([[0.1, 0.2]], dtype=np.float32)
    np.testing.assert_allclose(error_map(image, recon), [[0.16, 0.0]], atol=1e-7)
    out = error_map(torch.tensor(image), torch.tensor(recon))
    assert isinstance(out, torch.Tensor)
    with pytest.raises(ValueError, match="differ in shape"):
        error_map(image, recon[:, :1])


def test_default_rule_relative_to_image_max():
    image, recon = _pair([0.01, 0.05, 0.2, 0.5])  # threshold max(.03, .2 * .5) = .1
    mask = anomaly_mask(image, recon)
    assert mask.dtype == np.uint8 and mask.shape == (1, 2, 2)
    np.testing.assert_array_equal(mask.ravel(), [0, 0, 1, 1])


def test_default_rule_floor():
    image, recon = _pair([0.01, 0.02, 0.04, 0.05])  # .2 * .05 = .01 < .03 -> threshold .03
    np.testing.assert_array_equal(anomaly_mask(image, recon).ravel(), [0, 0, 1, 1])
    image, recon = _pair([0.0, 0.0, 0.0, 0.0])
    assert anomaly_mask(image, recon).sum() == 0  # a perfect reconstruction marks nothing


def test_difference_is_absolute():
    image, recon = _pair([0.0, 0.0, 0.0, 0.0])
    recon = recon + np.float32(0.5) * np.array([0, 0, 0, 1], dtype=np.float32).reshape(1, 2, 2)
    np.testing.assert_array_equal(anomaly_mask(image, recon).ravel(), [0, 0, 0, 1])


def test_brighter_polarity_marks_only_pixels_brighter_than_the_reconstruction():
    image = np.array([[[0.5, 0.0], [0.3, 0.2]]], dtype=np.float32)
    recon = np.array([[[0.0, 0.4], [0.0, 0.2]]], dtype=np.float32)  # one pixel darker than its reconstruction
    np.testing.assert_array_equal(anomaly_mask(image, recon).ravel(), [1, 1, 1, 0])  # published: |image - recon|
    np.testing.assert_array_equal(anomaly_mask(image, recon, polarity="brighter").ravel(), [1, 0, 1, 0])
    image, recon = _pair([0.01, 0.04, 0.06, 0.2])  # the floor bounds the per-image rule from below
    np.testing.assert_array_equal(anomaly_mask(image, recon, relative=0.1).ravel(), [0, 1, 1, 1])
    np.testing.assert_array_equal(anomaly_mask(image, recon, relative=0.1, min_threshold=0.05).ravel(), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="polarity must be one of"):
        anomaly_mask(image, recon, polarity="darker")
    with pytest.raises(ValueError, match="polarity must be one of"):
        AnomalyMaskd(polarity="signed")


def test_calibrated_threshold():
    image, recon = _pair([0.01, 0.05, 0.2, 0.5])
    np.testing.assert_array_equal(anomaly_mask(image, recon, threshold=0.04).ravel(), [0, 1, 1, 1])
    np.testing.assert_array_equal(anomaly_mask(image, recon, threshold=0.6).ravel(), [0, 0, 0, 0])


def test_mask_is_batch_independent():
    rng = np.random.default_rng(0)
    a = rng.random((1, 16, 16), dtype=np.float32) * 0.2
    b = rng.random((1, 16, 16), dtype=np.float32)  # much larger errors
    zero = np.zeros_like(a)
    alone = anomaly_mask(torch.from_numpy(a), torch.from_numpy(zero))
    batch = anomaly_mask(torch.from_numpy(np.stack([b, a])), torch.zeros(2, 1, 16, 16))
    assert batch.shape == (2, 1, 16, 16) and batch.dtype == torch.uint8
    torch.testing.assert_close(batch[1], alone)
    torch.testing.assert_close(batch[0], anomaly_mask(torch.from_numpy(b), torch.from_numpy(zero)))
    # the published batch-wide maximum would have changed a's mask: this test can fail
    published = np.abs(a) >= max(0.03, 0.2 * max(a.max(), b.max()))
    assert not np.array_equal(published.astype(np.uint8), alone.numpy())


def test_lung_restriction_with_dilation():
    image = np.zeros((1, 100, 100), dtype=np.float32)
    lung = np.zeros((1, 100, 100), dtype=np.uint8)
    lung[0, 20:80, 10:40] = 1
    image[0, 50, 42] = 0.5  # 2 px outside the lung: inside a 3 % (3 px) dilation
    image[0, 50, 90] = 0.9  # far outside: dropped, and does not set the per-image maximum
    image[0, 50, 20] = 0.3  # inside the lung
    recon = np.zeros_like(image)
    free = anomaly_mask(image, recon)
    assert free[0, 50, 90] == 1 and free[0, 50, 20] == 1 and free[0, 50, 42] == 1
    restricted = anomaly_mask(image, recon, lung=lung, lung_dilation=0.03)
    assert restricted[0, 50, 90] == 0 and restricted[0, 50, 42] == 1 and restricted[0, 50, 20] == 1
    assert restricted.sum() == 2
    tight = anomaly_mask(image, recon, lung=lung, lung_dilation=0.0)
    assert tight[0, 50, 42] == 0 and tight.sum() == 1
    # no lung found: no restriction
    np.testing.assert_array_equal(anomaly_mask(image, recon, lung=np.zeros_like(lung)), free)


def test_dilate_lungs_scales_with_size():
    lung = torch.zeros(1, 200, 200)
    lung[0, 100, 100] = 2
    region = dilate_lungs(lung, 0.05)  # 10 px half-width
    assert region.shape == (1, 1, 200, 200) and int(region.sum()) == 21 * 21


def test_image_score_rules():
    error = np.arange(16, dtype=np.float32).reshape(1, 4, 4) / 16
    lung = np.zeros((1, 4, 4), dtype=np.uint8)
    lung[0, :2] = 1
    assert image_score(error) == pytest.approx(7.5 / 16)
    assert image_score(error, rule="max") == pytest.approx(15 / 16)
    assert image_score(error, rule="p50") == pytest.approx(7.5 / 16)
    assert image_score(error, rule="p100") == pytest.approx(15 / 16)
    assert image_score(error, lung, rule="lung_mean") == pytest.approx(3.5 / 16)
    assert image_score(error, lung, rule="lung_max") == pytest.approx(7 / 16)
    assert image_score(error, lung, rule="mean") == pytest.approx(7.5 / 16)  # lung ignored
    assert image_score(error, np.zeros_like(lung), rule="lung_mean") == pytest.approx(7.5 / 16)
    assert image_score(torch.from_numpy(error[0]), rule="p99.5") <= 15 / 16
    with pytest.raises(ValueError, match="unknown score rule"):
        AnomalyScore("median")
    with pytest.raises(ValueError, match="one error map"):
        image_score(np.zeros((2, 1, 4, 4)))


def test_dict_chain_keeps_meta_and_types():
    image = MetaTensor(torch.rand(1, 32, 32), meta={"filename_or_obj": "x.png"})
    recon = torch.rand(1, 32, 32)
    lung = torch.zeros(1, 32, 32, dtype=torch.uint8)
    lung[0, 5:25, 4:14] = 1
    post = Compose(
        [
            AnomalyMapd(keys="pred", image_key="image", output_key="error"),
            AnomalyScored(keys="error", lung_key="lung", rule="lung_mean"),
            AnomalyMaskd(keys="pred", image_key="image", output_key="pred", restrict_to_lungs=True),
        ]
    )
    out = post({"image": image, "pred": recon, "lung": lung})
    expected_error = (image.as_tensor() - recon) ** 2
    torch.testing.assert_close(out["error"].as_tensor(), expected_error)
    assert out["score"] == pytest.approx(float(expected_error[lung > 0].mean()), rel=1e-5)
    assert out["lungs_found"] == 1
    assert out["pred"].dtype == torch.uint8 and out["pred"].shape == (1, 32, 32)
    assert out["pred"].meta["filename_or_obj"] == "x.png"
    torch.testing.assert_close(out["pred"].as_tensor(), anomaly_mask(image.as_tensor(), recon, lung=lung))
    # without a lung key: no restriction, lungs_found None
    out = post({"image": image, "pred": recon})
    assert out["lungs_found"] is None


def test_load_operating_point(tmp_path):
    assert load_operating_point(None) == {} and load_operating_point(tmp_path / "none.json") == {}
    path = tmp_path / "threshold.json"
    path.write_text('{"mask_threshold": 0.1, "score_threshold": 0.002}')
    assert load_operating_point(path)["mask_threshold"] == 0.1
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_operating_point(path)


def test_smoothing_weighs_a_blob_above_a_hot_pixel_and_scales_with_size():
    from bundle.evaluation.postprocess import anomaly_mask, image_score, smooth_map

    for size in (32, 64):
        hot, blob = torch.zeros(1, size, size), torch.zeros(1, size, size)
        hot[0, size // 4, size // 4] = 0.5  # an isolated edge pixel
        s = size // 8
        blob[0, size // 2 : size // 2 + s, size // 2 : size // 2 + s] = 0.5  # a lesion-sized blob, same peak
        assert image_score(hot, rule="max") == image_score(blob, rule="max")
        assert image_score(hot, rule="max", smoothing=0.02) < 0.5 * image_score(blob, rule="max", smoothing=0.02)
        both = hot + blob
        mask = anomaly_mask(both, torch.zeros_like(both), relative=0.5, smoothing=0.02)
        assert mask[0, size // 4, size // 4] == 0 and mask[0, size // 2 + s // 2, size // 2 + s // 2] == 1
        assert float(smooth_map(hot, 0.02).sum()) == pytest.approx(0.5, rel=1e-3)  # mass kept
    assert torch.equal(smooth_map(hot, 0.0), hot)
    with pytest.raises(ValueError, match="smoothing"):
        smooth_map(hot, -0.1)
