"""Datasets: synthetic chest X-ray phantoms, the embedded demo dataset, datalists."""

from .phantoms import Phantom, make_phantom

__all__ = ["Phantom", "make_phantom"]
