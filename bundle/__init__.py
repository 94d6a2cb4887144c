"""ART-ASyn chest X-ray anomaly segmentation: the Python code referenced by the bundle's configs."""

__version__ = "0.1.0"
