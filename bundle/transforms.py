"""The bundle's public transform surface: every MONAI transform the configs use, importable from one place."""
from bundle.postprocess import (  # noqa: E402,F401
    AnomalyMap, AnomalyMapd, AnomalyMask, AnomalyMaskd, AnomalyScore, AnomalyScored, ResizeToOriginald,
)
from bundle.io import CXRReader, LoadCXR, LoadCXRd  # noqa: E402,F401
from bundle.synthesis import RandTextureAnomaly, RandTextureAnomalyd  # noqa: E402,F401
from bundle.lungs import PBTSeg, PBTSegd  # noqa: E402,F401
from bundle.training_data import OfflineVariantsd  # noqa: E402,F401
from bundle.validation import LoadMaskd, SeededTextureAnomalyd, ValidationItemsd  # noqa: E402,F401
