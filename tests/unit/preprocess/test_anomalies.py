"""The anomaly-variant job (bundle/preprocess/anomalies.py): its brush option, checked like the transform's."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.synthesis.transforms import RandTextureAnomaly
from tests.synthesis_inputs import SIZE, cxr_like, ellipse_lungs


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
