"""Training: the network helpers (:mod:`~bundle.training.network`), the ART-ASyn loss
(:mod:`~bundle.training.losses`), batch preparation and the trainer iteration (:mod:`~bundle.training.engine`),
the training split, learning-rate policy and offline variants (:mod:`~bundle.training.data`), the synthetic
validation monitor (:mod:`~bundle.training.validation`) and the training handlers (:mod:`~bundle.training.handlers`)."""
