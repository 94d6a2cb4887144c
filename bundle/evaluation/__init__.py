"""Evaluation: error maps, scores and masks (:mod:`~bundle.evaluation.postprocess`), image and pixel metrics
(:mod:`~bundle.evaluation.metrics`), the evaluation run and its outputs (:mod:`~bundle.evaluation.evaluator`)
and the pictures and reports (:mod:`~bundle.evaluation.report`)."""
