"""Real DICOM Part 10 files for tests, written with pydicom (one writer for every test module)."""

from __future__ import annotations

import numpy as np

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def write_dicom(path, stored: np.ndarray, *, photometric="MONOCHROME2", bits_stored=8, signed=False, preamble=True,
                sop_class=DX_FOR_PRESENTATION, modality="DX", **attrs):
    """Write ``stored`` (H, W) as the pixel values of an explicit-VR little-endian file; ``attrs`` set extra elements."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = modality, "phantom"
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
    ds.save_as(path, enforce_file_format=preamble)
    return ds


def write_dicom_monochrome1(path, image: np.ndarray):
    """A 12-bit MONOCHROME1 CR file (low stored values are bright) holding ``image`` (H, W) in [0, 1]."""
    stored = np.rint((1.0 - image) * 4095)
    return write_dicom(path, stored, photometric="MONOCHROME1", bits_stored=12,
                       sop_class="1.2.840.10008.5.1.4.1.1.1", modality="CR")
