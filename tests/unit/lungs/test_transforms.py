"""bundle/lungs/transforms.py: PBTSeg and PBTSegd (array families, metadata, warnings, the lung cache)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from monai.data import MetaTensor

from bundle.data.phantoms import make_phantom
from bundle.io import read_image, write_png
from bundle.lungs.cache import lung_cache_path, write_stamp
from bundle.lungs.pbtseg import PBTSegParams, pbtseg
from bundle.lungs.transforms import PBTSeg, PBTSegd


def test_array_transform_types_and_params():
    img = make_phantom(128, seed=2).image
    ref, _ = pbtseg(img)
    out_np = PBTSeg()(img[None].astype(np.float64))
    assert isinstance(out_np, np.ndarray) and out_np.shape == (1, 128, 128) and out_np.dtype == np.uint8
    np.testing.assert_array_equal(out_np[0], ref)
    out_t = PBTSeg()(torch.from_numpy(img[None]))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.uint8
    np.testing.assert_array_equal(out_t[0].numpy(), ref)
    mt = MetaTensor(torch.from_numpy(img[None]), meta={"filename_or_obj": "a.png"})
    out_m = PBTSeg()(mt)
    assert isinstance(out_m, MetaTensor) and out_m.meta["filename_or_obj"] == "a.png"
    # parameters: an impossible area range finds nothing
    assert not PBTSeg(min_area=0.5)(img[None]).any() and pbtseg(img, min_area=0.5)[1]["found"] is False
    assert PBTSeg(PBTSegParams(border_brightening=True))(img[None]).any()


def test_dict_transform_records_found_lungs_and_warns_once(caplog):
    img = MetaTensor(torch.from_numpy(make_phantom(128, seed=1).image[None]), meta={"filename_or_obj": "x.png"})
    d = PBTSegd(keys="image", lung_key="lung")({"image": img})
    assert d["lung"].shape == (1, 128, 128) and d["lung"].dtype == torch.uint8
    assert d["lung"].meta["lung_found"] and d["lung"].meta["lung_left_found"] and d["lung"].meta["lung_right_found"]
    assert d["lung"].meta["lung_source"] == "computed"
    with caplog.at_level(logging.WARNING, logger="bundle.lungs.transforms"):
        d = PBTSegd()({"image": np.full((1, 64, 64), 0.5, np.float32)})
    assert d["lung_meta_dict"]["lung_found"] is False and not d["lung"].any()
    assert len([r for r in caplog.records if "no lung" in r.getMessage()]) == 1


def test_dict_transform_reads_the_cache_and_falls_back(tmp_path, caplog):
    root, cache = tmp_path / "ds", tmp_path / "ds" / "lungs"
    ph = make_phantom(128, seed=3)
    src = root / "train" / "healthy" / "a.png"
    write_png(src, ph.image)
    img = MetaTensor(torch.from_numpy(read_image(src)[0][None]), meta={"filename_or_obj": str(src)})
    online = PBTSegd()({"image": img})["lung"]
    assert online.meta["lung_source"] == "computed"
    cached = lung_cache_path(src, root, cache)
    assert cached == cache / "train" / "healthy" / "a.png"
    t = PBTSegd(cache_dir=cache, dataset_dir=root)
    with caplog.at_level(logging.WARNING, logger="bundle.lungs.cache"):
        assert t({"image": img})["lung"].meta["lung_source"] == "computed"  # not cached yet
    assert not caplog.records  # no cache folder yet: online maps, nothing stale to report
    write_png(cached, np.asarray(online[0]))
    # no stamp of this PBTSeg: a cache written by another version (or before stamps) is reported and not used
    with caplog.at_level(logging.WARNING, logger="bundle.lungs.cache"):
        assert t({"image": img})["lung"].meta["lung_source"] == "computed"
    assert any("pbtseg_stamp.json" in r.getMessage() and str(cache) in r.getMessage() for r in caplog.records)
    write_stamp(cache, PBTSegParams(max_area=0.2))  # stamped with other parameters: still not used
    assert t({"image": img})["lung"].meta["lung_source"] == "computed"
    write_stamp(cache)
    from_cache = t({"image": img})["lung"]
    assert from_cache.meta["lung_source"] == "cache"
    assert torch.equal(from_cache.as_tensor(), online.as_tensor())
    write_png(cached, np.zeros((10, 10), np.uint8))  # wrong size: recomputed, with a warning
    with caplog.at_level(logging.WARNING, logger="bundle.lungs.transforms"):
        assert t({"image": img})["lung"].meta["lung_source"] == "computed"
    assert any("computing instead" in r.getMessage() for r in caplog.records)
