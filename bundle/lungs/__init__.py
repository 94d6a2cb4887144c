"""Lung label maps (PBTSeg): the algorithm (:mod:`~bundle.lungs.pbtseg`), its MONAI transforms
(:mod:`~bundle.lungs.transforms`) and the lung-map cache they read (:mod:`~bundle.lungs.cache`).
The offline job that writes the cache is :mod:`bundle.preprocess.lung_maps`."""
