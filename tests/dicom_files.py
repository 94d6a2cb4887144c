"""Real DICOM Part 10 files for tests, written with pydicom 3.x or 2.4 (one writer for every test module).

The MONAI Label environment has pydicom < 3 (scripts/monailabel_env.sh), the bundle's has pydicom 3: these
writers run in both.
"""

from __future__ import annotations

import numpy as np

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def _pydicom_major() -> int:
    import pydicom

    return int(pydicom.__version__.split(".")[0])


_PYDICOM_MAJOR = _pydicom_major()


def save(ds, path, preamble: bool = True) -> None:
    """``ds.save_as``: a Part 10 file with preamble and file meta, or a bare data set (pydicom 3 and 2.4)."""
    if _PYDICOM_MAJOR >= 3:
        ds.save_as(path, enforce_file_format=preamble)
    else:
        ds.save_as(path, write_like_original=not preamble)


def write_dicom(
    path,
    stored: np.ndarray,
    *,
    photometric="MONOCHROME2",
    bits_stored=8,
    signed=False,
    preamble=True,
    sop_class=DX_FOR_PRESENTATION,
    modality="DX",
    study_uid=None,
    series_uid=None,
    **attrs,
):
    """Write ``stored`` (H, W) as the pixel values of an explicit-VR little-endian file; ``attrs`` set extra elements.

    Study/Series Instance UIDs are new ones unless given, so each file is its own series (as a PACS needs).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    if _PYDICOM_MAJOR < 3:  # 2.4 needs the encoding on the data set to write it (3.x takes the transfer syntax)
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = modality, "phantom", "Phantom^Synthetic"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    allocated = 8 if bits_stored == 8 and not signed else 16
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[(allocated, signed)]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelSpacing = [0.2, 0.15]
    ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    save(ds, path, preamble)
    return ds


def write_dicom_monochrome1(path, image: np.ndarray):
    """A 12-bit MONOCHROME1 CR file (low stored values are bright) holding ``image`` (H, W) in [0, 1]."""
    stored = np.rint((1.0 - image) * 4095)
    return write_dicom(
        path, stored, photometric="MONOCHROME1", bits_stored=12, sop_class=CR_IMAGE_STORAGE, modality="CR"
    )


def voi_lut_item(n_entries: int, first: int, table: np.ndarray, bits: int = 16, vr: str = "US"):
    """One VOI LUT Sequence item: ``table`` (n_entries values) applied from stored value ``first`` on."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [n_entries, first, bits]
    if vr == "OW":
        item.LUTData = np.asarray(table, "<u2").tobytes()
    else:
        item.LUTData = [int(v) for v in table]
    item["LUTData"].VR = vr
    item.LUTExplanation = "test VOI LUT"
    return item


CR_GAMMA = 1.5


def cr_displayed(image: np.ndarray) -> np.ndarray:
    """What :func:`write_cr_monochrome1_voi_lut` files display for ``image``: ``1 - (1 - image) ** 1.5``."""
    return 1.0 - (1.0 - np.clip(image, 0, 1)) ** CR_GAMMA


def write_cr_monochrome1_voi_lut(path, image: np.ndarray, **kw):
    """A MONOCHROME1 CR radiograph whose display needs its (non-linear) VOI LUT Sequence, as real CRs carry.

    Stored 12-bit values ``s = round(1000 + 2000 * (1 - image))`` (MONOCHROME1: low = bright); a 4096-entry,
    16-bit VOI LUT (OW) maps ``s`` to ``65535 * ((s - 1000) / 2000) ** 1.5`` (clipped outside [1000, 3000]).
    Displayed: ``1 - LUT(s) / 65535`` = :func:`cr_displayed` of ``image``, to within the rounding. A reader
    that ignores the LUT sees another contrast (the picture itself); one that ignores MONOCHROME1, the negative.
    """
    stored = np.rint(1000 + 2000 * (1.0 - np.clip(image, 0, 1)))
    s = np.arange(4096)
    table = np.rint(np.clip((s - 1000) / 2000, 0, 1) ** CR_GAMMA * 65535)
    return write_dicom(
        path,
        stored,
        photometric="MONOCHROME1",
        bits_stored=12,
        sop_class=CR_IMAGE_STORAGE,
        modality="CR",
        VOILUTSequence=[voi_lut_item(4096, 0, table, 16, "OW")],
        **kw,
    )


def dx_displayed(image: np.ndarray) -> np.ndarray:
    """What :func:`write_dx_monochrome2_window` files display for ``image``: ``clip(1.2 image - 0.1, 0, 1)``."""
    return np.clip(1.2 * np.clip(image, 0, 1) - 0.1, 0, 1)


def write_dx_monochrome2_window(path, image: np.ndarray, **kw):
    """A 14-bit MONOCHROME2 DX radiograph with a rescale and a LINEAR window narrower than its data.

    Stored ``s`` with value = 2 s - 1000 (RescaleSlope 2, RescaleIntercept -1000) and value = 1000 + 12000 *
    image; window center 7000.5, width 10001 (rescaled units) spans values 2000..12000, so the display is
    :func:`dx_displayed` of ``image`` (the darkest and brightest parts clipped, as a window does). A reader
    that ignores the window (min-max of the data) or the rescale shows other intensities.
    """
    value = 1000 + 12000 * np.clip(image, 0, 1)
    stored = np.rint((value + 1000) / 2)
    return write_dicom(
        path,
        stored,
        bits_stored=14,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        RescaleType="US",
        WindowCenter=7000.5,
        WindowWidth=10001,
        **kw,
    )
