"""Offline preprocessing jobs of ``configs/preprocess.json``: the sharded, resumable job runner
(:mod:`~bundle.preprocess.runner`), the lung-map cache job (:mod:`~bundle.preprocess.lung_maps`, run id
``lungs``), the offline anomaly job (:mod:`~bundle.preprocess.anomalies`, run id ``synthesize``) and their QA
montages (:mod:`~bundle.preprocess.montage`)."""
