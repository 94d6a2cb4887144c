"""The bundle's transforms, importable from one place: every MONAI transform the configs name comes from here."""

from bundle.evaluation.postprocess import (
    AnomalyMap,
    AnomalyMapd,
    AnomalyMask,
    AnomalyMaskd,
    AnomalyScore,
    AnomalyScored,
    ResizeToOriginald,
)
from bundle.io import LoadCXR, LoadCXRd
from bundle.lungs.transforms import PBTSeg, PBTSegd
from bundle.monailabel import MONAILabelResultd
from bundle.synthesis.transforms import RandTextureAnomaly, RandTextureAnomalyd
from bundle.training.data import OfflineVariantsd
from bundle.training.validation import (
    LoadMaskd,
    SeededTextureAnomalyd,
    ValidationItemsd,
)

__all__ = [
    "AnomalyMap",
    "AnomalyMapd",
    "AnomalyMask",
    "AnomalyMaskd",
    "AnomalyScore",
    "AnomalyScored",
    "LoadCXR",
    "LoadCXRd",
    "LoadMaskd",
    "MONAILabelResultd",
    "OfflineVariantsd",
    "PBTSeg",
    "PBTSegd",
    "RandTextureAnomaly",
    "RandTextureAnomalyd",
    "ResizeToOriginald",
    "SeededTextureAnomalyd",
    "ValidationItemsd",
]
