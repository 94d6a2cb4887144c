"""Reading every supported chest X-ray format into the image contract, and the atomic writers.

The image contract (see ``docs/architecture.md``): a 2D picture as ``(H, W)`` ``float32`` in ``[0, 1]``,
bright bone (MONOCHROME2 look), row 0 = top of the displayed image, column 0 = image left (patient right).
``LoadCXR``/``LoadCXRd`` add the channel axis, giving a ``(1, H, W)`` MetaTensor.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "CXRReadError",
    "is_supported",
    "read_image",
    "atomic_write",
    "as_2d",
    "write_text_atomic",
    "save_rgb_png",
    "read_labels",
    "write_png",
    "write_nifti",
    "CXRReader",
    "LoadCXR",
    "LoadCXRd",
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


def _series_folder_file(path: str | os.PathLike) -> Path:
    """The one DICOM file of a one-image series folder (what MONAI Label's DICOMweb datastore hands over).

    MONAI Label downloads a DICOMweb series into a folder named by its SeriesInstanceUID, one
    ``<SOPInstanceUID>.dcm`` per instance; with ``MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI=false`` it passes
    that folder to the bundle. A radiograph series holds one instance; hidden files are ignored.

    Raises:
        CXRReadError: the folder does not hold exactly one file, or that file is not DICOM.
    """
    files = sorted(p for p in Path(path).iterdir() if not p.name.startswith(".") and p.is_file())
    if len(files) != 1:
        raise CXRReadError(
            path,
            f"a folder is read as a one-image DICOM series, but it holds {len(files)} files; "
            "a single 2D radiograph is expected",
        )
    if _suffix(files[0]) not in (".dcm", ".dicom") and not _has_dicom_preamble(files[0]):
        raise CXRReadError(path, f"series folder: {files[0].name} is not a DICOM file")
    return files[0]


def is_supported(path: str | os.PathLike) -> bool:
    """Whether :func:`read_image` handles ``path``: a supported suffix, a DICOM file of any name, or a
    folder holding exactly one DICOM file (a one-image series, see :func:`read_image`).

    Files with other names are recognised as DICOM by their ``DICM`` marker (DICOM files are often
    named by UID or have no extension); this reads at most 132 bytes and never raises.
    """
    if os.path.isdir(path):
        try:
            _series_folder_file(path)
        except (CXRReadError, OSError):
            return False
        return True
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
        path,
        f"unsupported file type {suffix or '(no extension)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)} or DICOM",
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
    if mode.startswith("I") and arr.size and arr.min() >= 0 and arr.max() <= 65535:  # 16-bit grayscale
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


# ----------------------------------------------------------------------------------------------------------
# DICOM (pydicom + pylibjpeg decoders)
# ----------------------------------------------------------------------------------------------------------

_DECODER_HINT = (
    "install a decoder for it: pylibjpeg-libjpeg (JPEG, JPEG-LS), pylibjpeg-openjpeg (JPEG 2000, HTJ2K), "
    "pylibjpeg-rle (RLE) or python-gdcm"
)


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DICOM number (WindowCenter '40\\400' -> 40)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def _pydicom_luts():
    """pydicom's LUT functions for pydicom 3.x (``pydicom.pixels``) and 2.4 (``pydicom.pixel_data_handlers.util``).

    MONAI Label 0.8.5 needs pydicom < 3 (through pydicom-seg), the bundle's own environment has pydicom 3: the
    reader runs in both and gives the same arrays (tests/unit/test_io.py, and the MONAI Label test in its venv).
    """
    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_windowing
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import (
            apply_color_lut,
            apply_modality_lut,
            apply_windowing,
        )
    return apply_modality_lut, apply_windowing, apply_color_lut


def _decoder_available(ts) -> bool:
    """Whether an installed pixel data decoder handles the transfer syntax ``ts`` (pydicom 3.x and 2.4)."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.x: the configured handler modules
        import pydicom.config

        return any(h.supports_transfer_syntax(ts) and h.is_available() for h in pydicom.config.pixel_data_handlers)
    try:
        return bool(get_decoder(ts).is_available)
    except NotImplementedError:
        return False


def _window(ds, values: np.ndarray, apply_windowing) -> np.ndarray:
    """The first WindowCenter/WindowWidth (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID) mapped to [0, 1].

    pydicom's ``apply_windowing`` maps onto ``[y_min, y_max]``, a range it derives from BitsStored,
    PixelRepresentation and the rescale (reversed by a negative slope). Pushing two values far outside
    the window through the same function gives those two ends exactly, whatever the pydicom version.
    """
    out = apply_windowing(np.asarray(values, dtype=np.float64), ds)
    with np.errstate(over="ignore"):  # SIGMOID: exp of the far probes saturates to exactly y_min / y_max
        y_min, y_max = (float(v) for v in apply_windowing(np.array([-1e30, 1e30]), ds))
    if y_max == y_min:
        raise ValueError(f"windowing output range is empty ({y_min})")
    return (np.asarray(out, dtype=np.float64) - y_min) / (y_max - y_min)


def _voi_lut_table(ds) -> tuple[int, np.ndarray]:
    """First mapped value and the entries (float64) of the first VOI LUT Sequence item (PS3.3 C.11.2.1.1)."""
    item = ds.VOILUTSequence[0]
    n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    raw = item.LUTData
    if isinstance(raw, bytes):  # OW: 16-bit words in the data set's byte order
        little = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        little = True if little is None else little.is_little_endian
        table = np.frombuffer(raw, dtype="<u2" if little else ">u2")
    else:
        table = np.atleast_1d(np.asarray(raw if isinstance(raw, Sequence) else [raw], dtype=np.float64))
    if len(table) < n_entries:
        raise ValueError(f"VOI LUT has {len(table)} entries, its descriptor says {n_entries}")
    return first, table[:n_entries].astype(np.float64)


def _parse_dicom(path: str | os.PathLike) -> Any:
    """The pydicom data set of a single-frame image file (with or without the 128-byte preamble)."""
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:  # no 128-byte preamble + 'DICM': try as a bare data set
            ds = pydicom.dcmread(path, force=True)
    except Exception as e:
        raise CXRReadError(path, f"cannot parse as DICOM ({type(e).__name__}: {e})") from e
    if "PixelData" not in ds:
        raise CXRReadError(path, "DICOM file has no pixel data (not an image, or not a DICOM file)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise CXRReadError(path, f"multi-frame DICOM ({frames} frames); a single 2D radiograph is expected")
    return ds


def _decode_dicom(path: str | os.PathLike, ds: Any) -> np.ndarray:
    """The stored pixel values; a compressed transfer syntax without an installed decoder is named."""
    file_meta = getattr(ds, "file_meta", None)
    ts = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
    ts_text = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
    if ts is not None and ts.is_compressed and not _decoder_available(ts):
        raise CXRReadError(path, f"no installed decoder handles the transfer syntax {ts_text}; {_DECODER_HINT}")
    try:
        return ds.pixel_array
    except Exception as e:
        raise CXRReadError(path, f"cannot decode the pixel data ({ts_text}): {type(e).__name__}: {e}") from e


def _dicom_grey(path: str | os.PathLike, ds: Any, values: np.ndarray, apply_windowing: Any) -> tuple[np.ndarray, str]:
    """Modality values -> [0, 1] through the VOI LUT, else the window, else min-max; and how it was done."""
    if ds.get("VOILUTSequence"):
        # our own lookup, not pydicom's apply_voi (2.4 and 3.0): it holds the LUT index in the LUT's output
        # dtype, so a 4096-entry LUT with 8-bit output wraps indices above 255; and it truncates instead of
        # rounding rescaled (float) values. The io tests compare both where they agree.
        first, table = _voi_lut_table(ds)
        # normalise by what this LUT actually outputs (robust to a mis-declared bit depth)
        lo, hi = float(table.min()), float(table.max())
        index = np.clip(np.rint(values).astype(np.int64) - first, 0, len(table) - 1)
        return ((table[index] - lo) / (hi - lo) if hi > lo else np.zeros(index.shape)), "voi_lut"
    has_window = ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")
    if has_window and _first(ds.WindowWidth) >= 1:  # an absent, empty or degenerate window means: no VOI given
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        ds.VOILUTFunction = function  # empty means LINEAR (PS3.3 C.11.2.1.3); pydicom rejects ""
        return _window(ds, values, apply_windowing), f"window_{function.lower()}"
    return _minmax(path, values), "minmax"


def _read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    apply_modality_lut, apply_windowing, apply_color_lut = _pydicom_luts()
    ds = _parse_dicom(path)
    stored = _decode_dicom(path, ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if stored.ndim == 3 and stored.shape[-1] in (3, 4):  # colour secondary capture: luminance
        if photometric == "PALETTE COLOR":
            stored = apply_color_lut(stored, ds)
        rgb = stored[..., :3].astype(np.float64)
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(rgb @ _LUMA / (2**bits - 1), 0.0, 1.0).astype(np.float32), {"intensity": "luminance/range"}
    if stored.ndim != 2:
        raise CXRReadError(path, f"expected a 2D grayscale image, got pixel array of shape {stored.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise CXRReadError(path, f"unsupported PhotometricInterpretation {photometric!r}")

    try:
        values = apply_modality_lut(stored, ds)  # RescaleSlope/Intercept or Modality LUT Sequence
        image, intensity = _dicom_grey(path, ds, values, apply_windowing)
    except CXRReadError:
        raise
    except Exception as e:
        raise CXRReadError(path, f"invalid modality/VOI LUT attributes ({type(e).__name__}: {e})") from e
    if photometric == "MONOCHROME1":  # minimum value = white: invert to bright bone
        image = 1.0 - image
    meta: dict[str, Any] = {"intensity": intensity + ("+inverted" if photometric == "MONOCHROME1" else "")}
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is not None and len(spacing) == 2:
        meta["spacing"] = np.array([float(spacing[0]), float(spacing[1])])  # (row, column) mm
    return np.asarray(image, dtype=np.float32), meta


# ----------------------------------------------------------------------------------------------------------
# NIfTI (nibabel)
# ----------------------------------------------------------------------------------------------------------


def _load_nifti(path: str | os.PathLike):
    """nibabel image and its data squeezed to the on-disk 2D plane ``(x, y)``, plus the singleton axis."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise CXRReadError(path, f"cannot read as NIfTI ({type(e).__name__}: {e})") from e
    shape = data.shape
    singleton = -1
    if data.ndim == 3 and sum(n == 1 for n in shape) == 1 and min(shape) == 1:
        singleton = shape.index(1)
        data = np.squeeze(data, axis=singleton)
    elif data.ndim != 2:
        raise CXRReadError(
            path, f"NIfTI data of shape {shape}: expected a 2D image, or 3D with exactly one axis of size 1"
        )
    if min(data.shape) < 2:
        raise CXRReadError(path, f"NIfTI data of shape {shape} is not a 2D picture")
    return img, data, singleton


def _read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    img, data, singleton = _load_nifti(path)
    plane = data.T  # on disk: axis 0 = x = columns, axis 1 = y = rows  ->  (rows, columns)
    if plane.dtype == np.uint8:
        image, intensity = plane.astype(np.float32) / 255.0, "value/255"
    elif plane.dtype == np.uint16:
        image, intensity = (plane.astype(np.float64) / 65535.0).astype(np.float32), "value/65535"
    elif np.issubdtype(plane.dtype, np.floating) and np.isfinite(plane).all() and plane.min() >= 0 and plane.max() <= 1:
        image, intensity = plane.astype(np.float32), "unit"
    else:
        image, intensity = _minmax(path, plane), "minmax"
    zooms = [float(z) for z in img.header.get_zooms()]
    if singleton >= 0:
        del zooms[singleton]
    meta = {
        "intensity": intensity,
        "spacing": np.array([zooms[1], zooms[0]]) if len(zooms) >= 2 else np.ones(2),
        "nifti_affine": np.asarray(img.affine, dtype=np.float64),
        "nifti_singleton_axis": singleton,
        "nifti_qform_code": int(img.header["qform_code"]),
        "nifti_sform_code": int(img.header["sform_code"]),
    }
    return image, meta


def _base_meta(path: str | os.PathLike, fmt: str, shape: tuple[int, int]) -> dict[str, Any]:
    """Meta keys present for every format (same keys and shapes, so MetaTensors of mixed formats collate)."""
    return {
        "filename_or_obj": str(path),
        "format": fmt,
        "original_shape": np.array(shape, dtype=np.int64),
        "intensity": "",
        "spacing": np.ones(2),
        "nifti_affine": np.eye(4),
        "nifti_singleton_axis": -1,
        "nifti_qform_code": 0,
        "nifti_sform_code": 0,
    }


def read_image(path: str | os.PathLike, rescale: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a chest X-ray file into the image contract.

    Intensity rules (the rule applied is ``meta["intensity"]``):

    - PNG/JPEG/TIFF: stored value / 255 (8 bit) or / 65535 (16 bit); colour -> BT.601 luminance;
      palette -> the colours shown; float TIFF kept when in [0, 1], else min-max; EXIF orientation
      applied for JPEG/TIFF. 16-bit precision is kept (no 8-bit quantisation).
    - DICOM (pydicom 3.x or 2.4, same result): modality LUT (RescaleSlope/Intercept or Modality LUT
      Sequence; pydicom's ``apply_modality_lut``), then the first VOI LUT of the VOI LUT Sequence (output
      scaled by that LUT's own output range) or else the first WindowCenter/WindowWidth (LINEAR,
      LINEAR_EXACT or SIGMOID; pydicom's ``apply_windowing``, mapped to [0, 1]), or else min-max of the
      modality values; MONOCHROME1 is then inverted (``1 - x``).
    - NIfTI: uint8 / 255, uint16 / 65535, float already in [0, 1] kept, anything else min-max.

    Args:
        path: a PNG/JPEG/TIFF, DICOM or NIfTI file (see ``SUPPORTED_EXTENSIONS``; DICOM of any name), or a
            folder holding exactly one DICOM file: a one-image series as MONAI Label's DICOMweb datastore
            passes it (``filename_or_obj`` is then that file).
        rescale: additionally stretch the result to the full [0, 1] (min-max), e.g. for 16-bit PNGs
            that hold 12-bit data.

    Returns:
        ``(image, meta)``: ``image`` is ``(H, W)`` ``float32`` in ``[0, 1]``, bright bone, row 0 = top,
        column 0 = image left. ``meta`` (same keys for every format): ``filename_or_obj``, ``format``
        (``png|jpeg|tiff|dicom|nifti``), ``original_shape`` (H, W), ``intensity``, ``spacing`` (row,
        column; 1.0 when unknown), and for NIfTI inputs ``nifti_affine`` (4x4), ``nifti_singleton_axis``
        (-1 for 2D files), ``nifti_qform_code``/``nifti_sform_code`` (what :func:`write_nifti` needs to
        write a mask in the input's own layout).

    Raises:
        CXRReadError: the file is missing, empty, corrupt, or of an unsupported kind (message names it).
    """
    if os.path.isdir(path):
        path = _series_folder_file(path)
    _check_file(path)
    fmt = _format_of(path)
    if fmt in ("png", "jpeg", "tiff"):
        image, intensity = _pil_to_unit(path, _open_pil(path, fmt))
        extra: dict[str, Any] = {"intensity": intensity}
    elif fmt == "dicom":
        image, extra = _read_dicom(path)
    else:
        image, extra = _read_nifti(path)
    if image.ndim != 2 or min(image.shape) < 1:
        raise CXRReadError(path, f"expected a 2D picture, got shape {image.shape}")
    if rescale:
        image, extra["intensity"] = _minmax(path, image), extra["intensity"] + "+rescale"
    meta = _base_meta(path, fmt, image.shape)
    meta.update(extra)
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32), meta


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a label map or mask with its raw integer values, in the image contract's orientation.

    PNG/TIFF: the stored values (palette PNGs: the palette indices); NIfTI: the voxel values, laid out
    as :func:`read_image` does. Nothing is rescaled.

    Args:
        path: a PNG, TIFF or NIfTI file.

    Returns:
        ``(H, W)`` integer array (``uint8`` when the values fit, else ``uint16``/``int32``/``int64``).

    Raises:
        CXRReadError: unreadable file, a lossy or multi-channel format, or non-integer values.
    """
    _check_file(path)
    fmt = _format_of(path)
    if fmt in ("png", "tiff"):
        img = _open_pil(path, fmt)
        if img.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
            raise CXRReadError(path, f"label maps must be single-channel, got pixel mode {img.mode!r}")
        values = np.asarray(img)
    elif fmt == "nifti":
        values = _load_nifti(path)[1].T
    else:
        raise CXRReadError(path, f"label maps must be PNG, TIFF or NIfTI (lossless), not {fmt.upper()}")
    if values.dtype == bool:
        return values.astype(np.uint8)
    if not np.issubdtype(values.dtype, np.integer):
        if not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
            raise CXRReadError(path, "label map holds non-integer values")
        values = values.astype(np.int64)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.ascontiguousarray(values.astype(dtype))
    raise CXRReadError(path, f"label values {lo}..{hi} out of range")


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


def as_2d(array: Any, dtype: Any = None, what: str = "array") -> np.ndarray:
    """numpy (H, W) from a numpy array / torch tensor / MetaTensor of shape (H, W), (1, H, W) or (1, 1, H, W).

    Args:
        array: the picture.
        dtype: convert to this dtype (None keeps the array's).
        what: how the error message names the array.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2D (H, W) or (1, H, W), got shape {arr.shape}")
    return arr if dtype is None else arr.astype(dtype)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file all-or-nothing (temporary name, then rename)."""
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def save_rgb_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as PNG, atomically."""
    with atomic_write(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(tmp, format="PNG")
    return Path(path)


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
    arr = as_2d(array2d)
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


def _nifti_dtype(arr: np.ndarray) -> np.ndarray:
    """Cast to a dtype NIfTI readers take everywhere: bool -> uint8, float64 -> float32, int64 narrowed."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    if arr.dtype.itemsize == 8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return arr.astype(dtype)
        raise ValueError(f"integer values {lo}..{hi} do not fit in int32")
    return arr


def write_nifti(path: str | os.PathLike, array2d: Any, like_meta: dict[str, Any] | None = None) -> Path:
    """Write a 2D array (image contract orientation) as NIfTI, atomically; the inverse of :func:`read_image`.

    On disk, array axis 0 = x = columns (left to right) and axis 1 = y = rows (top to bottom), as ITK,
    SimpleITK and MONAI's ``SaveImage`` write 2D pictures; so ``read_image(write_nifti(p, x))`` gives
    ``x`` back (float32 in [0, 1] exactly; uint8 as value/255) and ``read_labels`` gives integer maps back.

    Args:
        path: destination ``.nii`` or ``.nii.gz`` file.
        array2d: ``(H, W)`` or ``(1, H, W)`` array/tensor indexed [row, column]. Dtype is kept
            (bool -> uint8, float64 -> float32).
        like_meta: the ``meta`` of the NIfTI input this output belongs to (from :func:`read_image` or a
            ``LoadCXR`` MetaTensor). The file then reproduces that input's layout: its singleton axis,
            affine and qform/sform codes, so a mask overlays the input in any viewer. ``array2d`` must
            have the input's original (H, W). Meta of non-NIfTI inputs is ignored (identity affine).

    Returns:
        ``Path(path)``.
    """
    arr = _nifti_dtype(as_2d(array2d))
    data = arr.T  # (rows, columns) -> (x, y)
    affine = np.eye(4)
    codes = None
    if like_meta is not None and _meta_value(like_meta, "format") == "nifti":
        shape = tuple(int(v) for v in np.asarray(_meta_value(like_meta, "original_shape")).reshape(-1))
        if shape != arr.shape:
            raise ValueError(
                f"{path}: array shape {arr.shape} differs from the NIfTI input's {shape}; restore it first"
            )
        axis = int(_meta_value(like_meta, "nifti_singleton_axis"))
        if axis >= 0:
            data = np.expand_dims(data, axis)
        affine = np.asarray(_meta_value(like_meta, "nifti_affine"), dtype=np.float64).reshape(4, 4)
        codes = int(_meta_value(like_meta, "nifti_qform_code")), int(_meta_value(like_meta, "nifti_sform_code"))
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    if codes is not None:
        img.set_qform(affine, code=codes[0])
        img.set_sform(affine, code=codes[1])
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def _meta_value(meta: dict[str, Any], key: str) -> Any:
    value = meta[key]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return value


# ----------------------------------------------------------------------------------------------------------
# MONAI reader and transforms
# ----------------------------------------------------------------------------------------------------------


class CXRReader(ImageReader):
    """MONAI ``ImageReader`` for every supported chest X-ray format, returning the image contract.

    Unlike MONAI's ``PILReader`` (which returns PNGs as ``(W, H)``), arrays are ``(H, W)``: axis 0 = rows
    (top to bottom), axis 1 = columns (image left to right). Usable as
    ``monai.transforms.LoadImage(reader=CXRReader(), ensure_channel_first=True)``.

    Args:
        rescale: stretch every image to the full [0, 1] after the format's intensity rule
            (see :func:`read_image`).
    """

    def __init__(self, rescale: bool = False):
        super().__init__()
        self.rescale = rescale

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return all(is_supported(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
        files = ensure_tuple(data)
        if len(files) != 1:
            raise ValueError(f"CXRReader reads one 2D image per item, got {len(files)} files: {files}")
        return read_image(files[0], rescale=self.rescale)

    def get_data(self, img: tuple[np.ndarray, dict[str, Any]]) -> tuple[np.ndarray, dict]:
        image, meta = img
        meta = dict(meta)
        affine = np.diag([float(meta["spacing"][0]), float(meta["spacing"][1]), 1.0])
        meta.update(
            spatial_shape=np.array(image.shape, dtype=np.int64),
            original_channel_dim=float("nan"),
            affine=affine,
            original_affine=affine.copy(),
        )
        return image, meta


class LoadCXR(Transform):
    """Load a chest X-ray file as a ``(1, H, W)`` float32 MetaTensor in [0, 1] (the image contract).

    Meta: ``filename_or_obj``, ``format``, ``spatial_shape`` and ``original_shape`` (H, W),
    ``intensity``, ``spacing``, ``affine`` (diagonal, row/column spacing) and the NIfTI layout fields
    listed in :func:`read_image`.

    Args:
        rescale: see :class:`CXRReader`.
    """

    def __init__(self, rescale: bool = False):
        self.reader = CXRReader(rescale=rescale)

    def __call__(self, filename: PathLike) -> MetaTensor:
        """Args: filename: path of one image file. Returns: ``(1, H, W)`` MetaTensor."""
        # the reader directly rather than LoadImage, which would also build every default MONAI reader
        image, meta = self.reader.get_data(self.reader.read(filename))
        return MetaTensor(torch.from_numpy(image)[None], meta=meta)


class LoadCXRd(MapTransform):
    """Dictionary version of :class:`LoadCXR`: replaces the file path under each key by its MetaTensor.

    Args:
        keys: keys holding file paths.
        rescale: see :class:`CXRReader`.
        allow_missing_keys: skip keys that are absent instead of raising.
    """

    def __init__(self, keys: KeysCollection, rescale: bool = False, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCXR(rescale=rescale)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
