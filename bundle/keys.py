"""The dictionary keys shared by the configs, transforms, engines and writers, defined once.

Like MONAI's ``CommonKeys``: a transform's default key argument is one of these, a config that names a key
writes the same string. Shapes follow the image contract in ``docs/architecture.md``.
"""

from __future__ import annotations

__all__ = ["Keys", "LUNG_META_KEYS"]


class Keys:
    """Dictionary keys of one item (and of one batch, with a leading batch dimension)."""

    #: (1, H, W) float input image; during training the anomalous one
    IMAGE = "image"
    #: (1, H, W) float healthy image the network learns to reconstruct
    TARGET = "target"
    #: (1, H, W) uint8 lung label map: 0 background, 1 lung on the image's left, 2 on its right
    LUNG = "lung"
    #: (1, H, W) 0/1 mask of the synthetic anomaly drawn into ``image``
    ANOMALY_MASK = "anomaly_mask"
    #: image-level label: 0 healthy, 1 diseased
    LABEL = "label"
    #: (1, H, W) 0/1 ground-truth lesion mask of a diseased test image
    MASK = "mask"
    #: network output (the reconstruction); after post-processing in inference, the predicted mask
    PRED = "pred"
    #: (1, H, W) absolute reconstruction error |image - clamp(pred, 0, 1)|
    ERROR = "error"
    #: image-level anomaly score (float)
    SCORE = "score"
    #: 1 when a diseased item has a ground-truth mask (evaluation and validation batches)
    HAS_MASK = "has_mask"
    #: per-image seed of a fixed synthetic validation anomaly
    SYNTHETIC_SEED = "synthetic_seed"
    #: offline anomalous variants of a training image and their masks (lists of paths)
    VARIANTS = "variants"
    VARIANT_MASKS = "variant_masks"


#: metadata entries written by ``PBTSegd`` (into the lung MetaTensor's ``meta``, or ``<lung_key>_meta_dict``)
LUNG_META_KEYS = ("lung_left_found", "lung_right_found", "lung_found", "lung_source")
