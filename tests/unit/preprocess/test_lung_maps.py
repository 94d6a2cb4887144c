"""bundle/preprocess/lung_maps.py: the lung-map cache job stamps its cache and refuses to resume another PBTSeg's."""

from __future__ import annotations

import json

import pytest

from bundle.data.phantoms import make_phantom
from bundle.io import write_png
from bundle.lungs.cache import STAMP_NAME, pbtseg_fingerprint, stamp_matches, write_stamp
from bundle.lungs.pbtseg import PBTSegParams
from bundle.preprocess.lung_maps import LungMapJob


def _job(root, **kwargs):
    return LungMapJob(root, num_workers=0, progress=False, montage_size=0, **kwargs)


def test_the_cache_is_stamped_and_a_stale_one_is_not_resumed(tmp_path):
    root = tmp_path / "ds"
    for k in range(2):
        write_png(root / "train" / "healthy" / f"{k}.png", make_phantom(96, seed=k).image)
    lungs = root / "lungs"
    assert _job(root).run()["done"] == 2
    stamp = json.loads((lungs / STAMP_NAME).read_text())
    assert stamp["fingerprint"] == pbtseg_fingerprint() and stamp["params"]["medial_fill"] == PBTSegParams().medial_fill
    assert _job(root).run()["skipped"] == 2  # same PBTSeg: resumed, nothing recomputed

    (lungs / STAMP_NAME).unlink()  # maps from before stamps (or another version): never mixed with new ones
    with pytest.raises(ValueError, match=r"(?s)without a pbtseg_stamp\.json.*--overwrite true") as info:
        _job(root).run()
    assert str(lungs) in str(info.value)
    write_stamp(lungs, PBTSegParams(max_area=0.2))  # another parameter set: refused as well
    with pytest.raises(ValueError, match="another --output_dir"):
        _job(root).run()
    assert _job(root, overwrite="true").run()["done"] == 2  # rebuilt, and stamped again
    assert stamp_matches(lungs) and not stamp_matches(lungs, PBTSegParams(max_area=0.2))
    assert _job(root, params={"max_area": 0.2}, output_dir=tmp_path / "other").run()["done"] == 2
    assert stamp_matches(tmp_path / "other", PBTSegParams(max_area=0.2))
