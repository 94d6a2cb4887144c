"""Reading every supported chest X-ray format into the image contract, and the atomic writers.

The image contract (see ``docs/architecture.md``): a 2D picture as ``(H, W)`` ``float32`` in ``[0, 1]``,
bright bone (MONOCHROME2 look), row 0 = top of the displayed image, column 0 = image left (patient right).
``LoadCXR``/``LoadCXRd`` add the channel axis, giving a ``(1, H, W)`` MetaTensor.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "CXRReadError",
    "is_supported",
    "read_image",
    "atomic_write",
    "write_png",
]

#: file name suffixes read by :func:`read_image` (lower case; DICOM files are also recognised by content)
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".dcm",
    ".dicom",
    ".nii",
    ".nii.gz",
)

_PIL_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}


class CXRReadError(ValueError):
    """A file could not be read as a chest X-ray; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _has_dicom_preamble(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 marker ``DICM`` after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_supported(path: str | os.PathLike) -> bool:
    """Whether :func:`read_image` handles ``path``: a supported suffix, or a DICOM file of any name.

    Files with other names are recognised as DICOM by their ``DICM`` marker (DICOM files are often
    named by UID or have no extension); this reads at most 132 bytes and never raises.
    """
    if _suffix(path) in SUPPORTED_EXTENSIONS:
        return True
    return os.path.isfile(path) and _has_dicom_preamble(path)


def _format_of(path: str | os.PathLike) -> str:
    suffix = _suffix(path)
    if suffix in _PIL_FORMATS:
        return _PIL_FORMATS[suffix]
    if suffix in (".nii", ".nii.gz"):
        return "nifti"
    if suffix in (".dcm", ".dicom") or _has_dicom_preamble(path):
        return "dicom"
    raise CXRReadError(
        path, f"unsupported file type {suffix or '(no extension)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)} or DICOM"
    )


def _check_file(path: str | os.PathLike) -> None:
    if not os.path.exists(path):
        raise CXRReadError(path, "file not found")
    if not os.path.isfile(path):
        raise CXRReadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise CXRReadError(path, "empty file (0 bytes)")


# ----------------------------------------------------------------------------------------------------------
# PNG / JPEG / TIFF (Pillow)
# ----------------------------------------------------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's own "L" conversion


def _open_pil(path: str | os.PathLike, fmt: str):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()  # decode now so that truncated/corrupt data fails here, with the file name
        if fmt != "png":
            img = ImageOps.exif_transpose(img)  # the displayed orientation (camera photos of films)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CXRReadError(path, f"cannot decode as {fmt.upper()} ({e})") from e
    return img


def _pil_to_unit(path: str | os.PathLike, img) -> tuple[np.ndarray, str]:
    """Pillow image -> (H, W) float32 in [0, 1] and the intensity rule applied."""
    mode = img.mode
    if mode == "P" or mode == "PA":  # palette: the colours it shows, not the indices
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
        return (rgb @ _LUMA / 255.0).astype(np.float32), "luminance/255"
    if mode == "LA":
        img, mode = img.getchannel("L"), "L"
    arr = np.asarray(img)
    if mode == "1":
        return arr.astype(np.float32), "binary"
    if mode == "L":
        return (arr.astype(np.float32) / 255.0), "value/255"
    if mode.startswith("I;16") or (mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535):
        return (arr.astype(np.float64) / 65535.0).astype(np.float32), "value/65535"
    if mode == "F" and arr.size and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1:
        return arr.astype(np.float32), "unit"
    if mode in ("I", "F"):
        return _minmax(path, arr), "minmax"
    raise CXRReadError(path, f"unsupported pixel mode {mode!r}")


def _minmax(path: str | os.PathLike, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise CXRReadError(path, "pixel values contain NaN or infinity")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a chest X-ray file into the image contract.

    Args:
        path: a PNG/JPEG/TIFF, DICOM or NIfTI file (see ``SUPPORTED_EXTENSIONS``).

    Returns:
        ``(image, meta)``: ``image`` is ``(H, W)`` ``float32`` in ``[0, 1]``, bright bone, row 0 = top,
        column 0 = image left. ``meta`` holds ``filename_or_obj``, ``format``, ``original_shape`` (H, W)
        and ``intensity`` (the intensity rule applied).

    Raises:
        CXRReadError: the file is missing, empty, corrupt, or of an unsupported kind (message names it).
    """
    _check_file(path)
    fmt = _format_of(path)
    if fmt in ("png", "jpeg", "tiff"):
        img = _open_pil(path, fmt)
        image, intensity = _pil_to_unit(path, img)
    else:
        raise CXRReadError(path, f"{fmt} reading is not implemented yet")
    if image.ndim != 2 or min(image.shape) < 1:
        raise CXRReadError(path, f"expected a 2D picture, got shape {image.shape}")
    meta = {
        "filename_or_obj": str(path),
        "format": fmt,
        "original_shape": np.array(image.shape, dtype=np.int64),
        "intensity": intensity,
    }
    return np.ascontiguousarray(image, dtype=np.float32), meta


# ----------------------------------------------------------------------------------------------------------
# atomic writers
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager for writing ``path`` all-or-nothing.

    Yields a temporary path in the same folder, with the same suffix (so writers that choose the format
    from the name still work). On success it is renamed onto ``path`` (atomic on POSIX: readers see the
    old file or the complete new one, never a partial one); on any exception it is removed and the
    exception propagates, leaving an existing ``path`` untouched. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    # a fresh unique name, not a pre-created file, so the result gets normal (umask) permissions
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _as_2d(array: Any, what: str = "array") -> np.ndarray:
    """numpy (H, W) from a numpy array / torch tensor / MetaTensor of shape (H, W) or (1, H, W)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2D (H, W) or (1, H, W), got shape {arr.shape}")
    return arr


def write_png(path: str | os.PathLike, array2d: Any, bits: int = 8) -> Path:
    """Write a 2D array as a lossless grayscale PNG, atomically.

    Integer/bool arrays (label maps, masks) are stored with their exact values: 8-bit when they fit in
    ``0..255``, else 16-bit (``0..65535``); ``bits`` is ignored for them. Float arrays are images in
    ``[0, 1]`` and are quantised to ``bits`` (8 or 16): ``round(x * (2**bits - 1))``, so that
    :func:`read_image` returns them to within ``0.5 / (2**bits - 1)``.

    Args:
        path: destination ``.png`` file (parent folders are created).
        array2d: ``(H, W)`` or ``(1, H, W)`` numpy array, torch tensor or MetaTensor, indexed [row, column].
        bits: 8 or 16, bit depth for float images.

    Returns:
        ``Path(path)``.
    """
    from PIL import Image

    arr = _as_2d(array2d)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ValueError(f"{path}: integer values {lo}..{hi} do not fit in a 16-bit PNG")
        out = arr.astype(np.uint8 if hi <= 255 else np.uint16)
    elif np.issubdtype(arr.dtype, np.floating):
        if bits not in (8, 16):
            raise ValueError(f"{path}: bits must be 8 or 16, got {bits}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: image contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"{path}: float images must lie in [0, 1], got {lo:.4g}..{hi:.4g}")
        scale = 2**bits - 1
        out = np.rint(np.clip(arr, 0.0, 1.0) * scale).astype(np.uint8 if bits == 8 else np.uint16)
    else:
        raise ValueError(f"{path}: unsupported dtype {arr.dtype}")
    img = Image.fromarray(np.ascontiguousarray(out))
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
