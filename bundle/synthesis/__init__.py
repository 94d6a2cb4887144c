"""ART-ASyn anomaly synthesis: the brush (:mod:`~bundle.synthesis.brush`), the texture-anomaly algorithm
(:mod:`~bundle.synthesis.texture`), its MONAI transforms (:mod:`~bundle.synthesis.transforms`) and the anomaly
statistics compared with the published code (:mod:`~bundle.synthesis.statistics`)."""
