"""Tests for bundle.io: every format and convention standardises to the same (H, W) float32 [0, 1] picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bundle.io import (
    SUPPORTED_EXTENSIONS,
    CXRReader,
    CXRReadError,
    LoadCXR,
    LoadCXRd,
    atomic_write,
    is_supported,
    read_image,
    read_labels,
    write_nifti,
    write_png,
)
from tests.dicom_files import (
    cr_displayed,
    dx_displayed,
    save,
    write_cr_monochrome1_voi_lut,
    write_dicom,
    write_dx_monochrome2_window,
)

H, W = 48, 64


def pattern() -> np.ndarray:
    """Non-symmetric 8-bit test picture k in 0..255 (uint8), H != W: gradient, bright 'L' top-left, dark square
    bottom-right. Any flip or transpose changes it."""
    r, c = np.mgrid[0:H, 0:W]
    k = np.rint(40 + 120 * c / (W - 1) + 40 * r / (H - 1))
    k[4:24, 4:9] = 255
    k[19:24, 4:20] = 255
    k[H - 12 : H - 4, W - 14 : W - 4] = 0
    return k.astype(np.uint8)


EXPECTED = pattern().astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------- writers per format
def _pil(path, array, **save):
    from PIL import Image

    Image.fromarray(array).save(path, **save)


def _voi_lut_dataset():
    """VOI LUT item mapping stored s = 255 - k to display (255 - s) * 257 (16-bit output): an inverting LUT,
    so a reader that ignores it returns the negative."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.LUTData = [int((255 - s) * 257) for s in range(256)]
    item["LUTData"].VR = "US"
    return [item]


def _window_stored():
    """Stored 12-bit values 1000 + 4k, with the black/white pixels pushed outside the window (clipped)."""
    k = pattern().astype(np.int64)
    s = 1000 + 4 * k
    s[k == 0], s[k == 255] = 200, 3000
    return s  # window [1000, 2020] -> [0, 1]


WINDOW = {"WindowCenter": [1510.5, 40], "WindowWidth": [1021, 400]}  # first value is the one used


def write_case(case: str, d):
    """Write the test pattern as the file format ``case`` names, in folder ``d``; returns its path."""
    k = pattern()
    if case.startswith("dcm_"):
        return _write_dicom_case(case, d, k)
    if case.startswith("nii"):
        return _write_nifti_case(case, d, k)
    return _write_raster_case(case, d, k)


def _write_raster_case(case: str, d, k):
    if case == "png8":
        write_png(d / "a.png", k)  # uint8 written losslessly
        return d / "a.png"
    if case == "png16":
        _pil(d / "a.png", k.astype(np.uint16) * 257)
        return d / "a.png"
    if case == "png_rgb":
        _pil(d / "a.png", np.stack([k] * 3, -1))
        return d / "a.png"
    if case == "png_palette":
        from PIL import Image

        img = Image.fromarray(255 - k, "L").convert("P")  # indices = 255-k ...
        img.putpalette([255 - i for i in range(256) for _ in range(3)])  # ... palette shows k
        img.save(d / "a.png")
        return d / "a.png"
    if case == "jpeg_rgb":
        _pil(d / "a.jpg", np.stack([k] * 3, -1), quality=100)
        return d / "a.jpg"
    if case == "tiff8":
        _pil(d / "a.tif", k)
        return d / "a.tif"
    if case == "tiff16":
        _pil(d / "a.tiff", k.astype(np.uint16) * 257)
        return d / "a.tiff"
    raise AssertionError(case)


def _write_dicom_case(case: str, d, k):
    if case == "dcm_mono2":
        write_dicom(d / "a.dcm", k)
    elif case == "dcm_mono1":
        write_dicom(d / "a.dcm", 255 - k, photometric="MONOCHROME1")
    elif case == "dcm_12bit":
        write_dicom(d / "a.dcm", k.astype(np.uint16) * 16, bits_stored=12)
    elif case == "dcm_signed":
        write_dicom(d / "a.dcm", k.astype(np.int16) - 128, bits_stored=16, signed=True)
    elif case == "dcm_rescale":  # negative slope: ignoring it gives the negative
        write_dicom(d / "a.dcm", 255 - k, RescaleSlope=-1, RescaleIntercept=255, RescaleType="US")
    elif case == "dcm_window":
        write_dicom(d / "a.dcm", _window_stored(), bits_stored=12, **WINDOW)
    elif case == "dcm_rescale_window":  # window in rescaled units: stored = (value - 100) / 2
        s = _window_stored()
        write_dicom(d / "a.dcm", (s - 100) // 2, bits_stored=12, RescaleSlope=2, RescaleIntercept=100, **WINDOW)
    elif case == "dcm_mono1_window":
        write_dicom(
            d / "a.dcm",
            4095 - _window_stored(),
            bits_stored=12,
            photometric="MONOCHROME1",
            WindowCenter=4095 - 1510.5 + 1,
            WindowWidth=1021,
        )
    elif case == "dcm_voi_lut":
        write_dicom(d / "a.dcm", 255 - k, VOILUTSequence=_voi_lut_dataset(), **WINDOW)  # LUT preferred to window
    elif case == "dcm_voi_lut_ow":  # 4096-entry LUT with 8-bit output stored as OW words
        from pydicom.dataset import Dataset

        item = Dataset()
        item.LUTDescriptor = [4096, 0, 8]
        item.LUTData = np.array([255 - i // 16 for i in range(4096)], "<u2").tobytes()
        item["LUTData"].VR = "OW"
        write_dicom(d / "a.dcm", (255 - k.astype(np.uint16)) * 16, bits_stored=12, VOILUTSequence=[item])
    elif case == "dcm_no_extension":
        write_dicom(d / "1.2.826.0.1.3680043", k)
        return d / "1.2.826.0.1.3680043"
    elif case == "dcm_no_preamble":
        write_dicom(d / "a.dcm", k, preamble=False)
    elif case in ("dcm_rle", "dcm_j2k", "dcm_jpegls"):
        _write_compressed_dicom(case, d, k)
    else:
        raise AssertionError(case)
    return d / "a.dcm"


def _write_compressed_dicom(case: str, d, k) -> None:
    """The pattern as a 12-bit DICOM in a lossless compressed transfer syntax (RLE, JPEG 2000 or JPEG-LS)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    syntax = {"dcm_rle": RLELossless, "dcm_j2k": JPEG2000Lossless, "dcm_jpegls": JPEGLSLossless}[case]
    if case != "dcm_rle":  # pydicom 3 encodes these with pylibjpeg-openjpeg / pyjpegls; 2.4 only RLE
        pixels = pytest.importorskip("pydicom.pixels", reason="JPEG encoders need pydicom 3")
        if not pixels.get_encoder(syntax).is_available:
            pytest.skip(f"no encoder for {syntax.name} installed (pyjpegls / pylibjpeg-openjpeg)")
    ds = write_dicom(d / "a.dcm", k.astype(np.uint16) * 16, bits_stored=12)
    ds.compress(syntax)
    save(ds, d / "a.dcm")
    assert pydicom.dcmread(d / "a.dcm").file_meta.TransferSyntaxUID == syntax


def _write_nifti_case(case: str, d, k):
    if case == "nii2d":
        _nifti(d / "a.nii", k.T)
        return d / "a.nii"
    if case in ("nii3d_last", "nii3d_first"):
        data = k.T[..., None] if case == "nii3d_last" else k.T[None]
        _nifti(d / "a.nii.gz", data.astype(np.float32) * 4 + 10)  # float out of [0, 1]: min-max
        return d / "a.nii.gz"
    raise AssertionError(case)


def _nifti(path, data):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.diag([-0.5, -0.7, 1.0, 1.0])), str(path))


CASES = [
    "png8", "png16", "png_rgb", "png_palette", "jpeg_rgb", "tiff8", "tiff16",
    "dcm_mono2", "dcm_mono1", "dcm_12bit", "dcm_signed", "dcm_rescale", "dcm_window", "dcm_rescale_window",
    "dcm_mono1_window", "dcm_voi_lut", "dcm_voi_lut_ow", "dcm_no_extension", "dcm_no_preamble", "dcm_rle", "dcm_j2k",
    "dcm_jpegls",
    "nii2d", "nii3d_last", "nii3d_first",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_same_picture_every_format(case, tmp_path):
    path = write_case(case, tmp_path)
    assert is_supported(path)
    image, meta = read_image(path)
    assert image.shape == (H, W) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    if case == "jpeg_rgb":  # lossy: close, and orientation-defining structures in place
        assert np.abs(image - EXPECTED).mean() < 0.01 and np.abs(image - EXPECTED).max() < 0.1
    else:
        np.testing.assert_allclose(image, EXPECTED, atol=1e-5, err_msg=f"{case}: {meta['intensity']}")
    assert meta["filename_or_obj"] == str(path) and tuple(meta["original_shape"]) == (H, W)


def test_dicom_meta_records_rule(tmp_path):
    _, meta = read_image(write_case("dcm_mono1_window", tmp_path))
    assert meta["format"] == "dicom" and meta["intensity"] == "window_linear+inverted"
    np.testing.assert_allclose(meta["spacing"], [0.2, 0.15])
    assert read_image(write_case("dcm_voi_lut", tmp_path))[1]["intensity"] == "voi_lut"
    write_dicom(tmp_path / "empty_window.dcm", pattern(), WindowCenter="", WindowWidth="")  # no VOI given
    image, meta = read_image(tmp_path / "empty_window.dcm")
    assert meta["intensity"] == "minmax" and np.allclose(image, EXPECTED, atol=1e-5)


def _radiograph() -> np.ndarray:
    """(H, W) float picture in [0, 1] with its full range used (the pattern, smoothly varied)."""
    r, c = np.mgrid[0:H, 0:W]
    return np.clip(EXPECTED * 0.8 + 0.1 + 0.1 * np.sin(r / 5.0) * np.cos(c / 7.0), 0, 1)


@pytest.mark.parametrize("kind", ["cr_monochrome1_voi_lut", "dx_monochrome2_window"])
def test_radiograph_files_show_the_picture(kind, tmp_path):
    """The CR/DX files the MONAI Label tests serve read as they display (VOI LUT / window, rescale,
    MONOCHROME1), which is not the stored picture's own contrast."""
    picture = _radiograph()
    path = tmp_path / f"{kind}.dcm"
    if kind.startswith("cr"):
        write_cr_monochrome1_voi_lut(path, picture)
        shown, atol, rule = cr_displayed(picture), 1.5 / 2000, "voi_lut+inverted"  # stored step x LUT slope <= 1.5
    else:
        write_dx_monochrome2_window(path, picture)
        shown, atol, rule = dx_displayed(picture), 2 / 10000, "window_linear"  # 2 value units over a 10000 window
    image, meta = read_image(path)
    assert meta["intensity"] == rule
    np.testing.assert_allclose(image, shown, atol=atol)
    assert np.abs(shown - picture).max() > 0.05  # the display differs from the stored contrast


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_standard_and_pydicom(function, tmp_path):
    """Windowing = PS3.3 C.11.2.1.2 (own formula here) = pydicom's apply_windowing over its output range."""
    import pydicom

    from bundle.io import _pydicom_luts  # pydicom 3.x or 2.4, whichever is installed

    apply_modality_lut, apply_windowing, _ = _pydicom_luts()
    stored = np.arange(H * W, dtype=np.int64).reshape(H, W) % 4096
    c, w = 2100.0, 1500.0
    write_dicom(
        tmp_path / "w.dcm",
        stored,
        bits_stored=12,
        RescaleSlope=0.5,
        RescaleIntercept=-20,
        WindowCenter=c,
        WindowWidth=w,
        VOILUTFunction=function,
    )
    image, meta = read_image(tmp_path / "w.dcm")
    assert meta["intensity"] == f"window_{function.lower()}"
    v = stored * 0.5 - 20
    if function == "LINEAR":
        standard = np.clip((v - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    elif function == "LINEAR_EXACT":
        standard = np.clip((v - c) / w + 0.5, 0, 1)
    else:
        standard = 1 / (1 + np.exp(-4 * (v - c) / w))
    np.testing.assert_allclose(image, standard, atol=1e-6)
    ds = pydicom.dcmread(tmp_path / "w.dcm")
    y_min, y_max = -20.0, 4095 * 0.5 - 20  # pydicom's output range: the rescaled 12-bit range
    theirs = (apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds) - y_min) / (y_max - y_min)
    np.testing.assert_allclose(image, theirs, atol=1e-6)


def test_voi_lut_matches_pydicom_where_it_agrees(tmp_path):
    """VOI LUT Sequence: ours equals pydicom's apply_voi_lut for a 16-bit LUT; for a 4096-entry LUT with 8-bit
    output pydicom holds indices in uint8 (they wrap), ours gives the picture (why io.py keeps its lookup)."""
    import pydicom

    try:
        from pydicom.pixels import apply_voi_lut
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_voi_lut
    picture = _radiograph()
    write_cr_monochrome1_voi_lut(tmp_path / "cr.dcm", picture)
    ds = pydicom.dcmread(tmp_path / "cr.dcm")
    theirs = 1.0 - apply_voi_lut(ds.pixel_array, ds).astype(np.float64) / 65535  # MONOCHROME1: inverted
    assert np.abs(theirs - picture).max() > 0.05  # the LUT matters
    np.testing.assert_allclose(read_image(tmp_path / "cr.dcm")[0], theirs, atol=1e-6)

    image, _ = read_image(write_case("dcm_voi_lut_ow", tmp_path))  # 4096 entries, 8-bit output
    np.testing.assert_allclose(image, EXPECTED, atol=1e-5)


def test_one_file_series_folder(tmp_path):
    """A folder holding one DICOM file (MONAI Label's DICOMweb series, not converted) reads as that file."""
    series = tmp_path / "1.2.826.0.1.3680043.8.498.1"
    series.mkdir()
    write_dx_monochrome2_window(series / "1.2.826.0.1.3680043.8.498.2.dcm", _radiograph())
    (series / ".hidden").write_text("ignored")
    assert is_supported(series)
    image, meta = read_image(series)
    np.testing.assert_array_equal(image, read_image(series / "1.2.826.0.1.3680043.8.498.2.dcm")[0])
    assert meta["filename_or_obj"] == str(series / "1.2.826.0.1.3680043.8.498.2.dcm") and meta["format"] == "dicom"
    assert LoadCXR()(str(series)).shape == (1, H, W)
    write_png(series / "extra.png", pattern())
    assert not is_supported(series)
    with pytest.raises(CXRReadError, match="holds 2 files"):
        read_image(series)
    (series / "1.2.826.0.1.3680043.8.498.2.dcm").unlink()
    with pytest.raises(CXRReadError, match="extra.png is not a DICOM file"):
        read_image(series)


def test_undecodable_transfer_syntax_names_file_and_syntax(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML

    ds = write_dicom(tmp_path / "video.dcm", pattern())
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    save(ds, tmp_path / "video.dcm")
    assert pydicom.dcmread(tmp_path / "video.dcm").file_meta.TransferSyntaxUID == MPEG2MPML
    with pytest.raises(CXRReadError, match=r"video\.dcm.*MPEG2"):
        read_image(tmp_path / "video.dcm")


def _corrupt(d):
    good = write_png(d / "good.png", pattern())
    (d / "truncated.png").write_bytes(good.read_bytes()[:150])
    (d / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    write_dicom(d / "short.dcm", pattern())
    raw = (d / "short.dcm").read_bytes()
    (d / "short.dcm").write_bytes(raw[: len(raw) - 500])
    (d / "notdicom.dcm").write_bytes(b"\x01\x02" * 300)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("empty.png", "empty"),
        ("missing.png", "not found"),
        ("truncated.png", "PNG"),
        ("garbage.jpg", "JPEG"),
        ("short.dcm", "pixel data"),
        ("notdicom.dcm", "DICOM"),
        ("notes.txt", "unsupported"),
        ("volume.nii.gz", "exactly one axis of size 1"),
        ("broken.nii.gz", "NIfTI"),
    ],
)
def test_bad_files_name_file_and_problem(name, problem, tmp_path):
    _corrupt(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    _nifti(tmp_path / "volume.nii.gz", np.zeros((8, 9, 3), np.float32))
    (tmp_path / "broken.nii.gz").write_bytes((tmp_path / "volume.nii.gz").read_bytes()[:100])
    with pytest.raises(CXRReadError, match=problem) as err:
        read_image(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_is_supported(tmp_path):
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz"} <= set(SUPPORTED_EXTENSIONS)
    assert is_supported("x/IMAGE.PNG") and is_supported("a.nii.gz") and not is_supported("a.gz")
    (tmp_path / "readme").write_text("x" * 200)
    assert not is_supported(tmp_path / "readme") and not is_supported(tmp_path / "nothing")
    assert is_supported(write_case("dcm_no_extension", tmp_path))


# ---------------------------------------------------------------------------------------------- labels and writers
def test_write_png_labels_and_16bit(tmp_path):
    lab = np.zeros((H, W), np.uint8)
    lab[5:20, 3:10], lab[5:20, 40:60] = 1, 2
    assert np.array_equal(read_labels(write_png(tmp_path / "lab.png", lab)), lab)
    assert read_labels(tmp_path / "lab.png").dtype == np.uint8
    big = (np.arange(H * W).reshape(H, W) * 7).astype(np.int64)
    assert np.array_equal(read_labels(write_png(tmp_path / "big.png", big)), big)
    x = np.random.default_rng(0).random((H, W), dtype=np.float32)
    for bits in (8, 16):
        out, _ = read_image(write_png(tmp_path / f"x{bits}.png", torch.from_numpy(x)[None], bits=bits))
        assert np.abs(out - x).max() <= 0.5 / (2**bits - 1) + 1e-6
    with pytest.raises(ValueError, match="0, 1"):
        write_png(tmp_path / "bad.png", x * 2)


def test_write_nifti_roundtrip(tmp_path):
    x = np.random.default_rng(1).random((H, W), dtype=np.float32)
    out, meta = read_image(write_nifti(tmp_path / "x.nii.gz", x))
    assert np.array_equal(out, x) and meta["intensity"] == "unit"
    lab = (EXPECTED > 0.5).astype(np.uint8)
    assert np.array_equal(read_labels(write_nifti(tmp_path / "m.nii", lab)), lab)


@pytest.mark.parametrize("case", ["nii2d", "nii3d_last", "nii3d_first"])
def test_write_nifti_like_meta_overlays_input(case, tmp_path):
    import nibabel as nib

    src = write_case(case, tmp_path)
    image, meta = read_image(src)
    mask = (image > 0.9).astype(np.uint8)  # the bright 'L'
    out = write_nifti(tmp_path / "mask.nii.gz", mask, like_meta=meta)
    a, b = nib.load(str(src)), nib.load(str(out))
    assert a.shape == b.shape and np.allclose(a.affine, b.affine)
    assert np.array_equal(
        np.asarray(b.dataobj), (np.asarray(a.dataobj) > np.asarray(a.dataobj).max() * 0.9).astype(np.uint8)
    )
    assert np.array_equal(read_labels(out), mask)
    with pytest.raises(ValueError, match="restore"):
        write_nifti(tmp_path / "wrong.nii.gz", mask[:-1], like_meta=meta)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 9), singleton=st.sampled_from([None, 0, 1, 2]), seed=st.integers(0, 99))
def test_nifti_layout_roundtrip_property(tmp_path_factory, h, w, singleton, seed):
    """Any (H, W): a file in the documented layout reads as the picture, and write_nifti(like_meta) restores
    that file's own layout exactly."""
    import nibabel as nib

    d = tmp_path_factory.mktemp("n")
    x = np.random.default_rng(seed).random((h, w), dtype=np.float32)
    data = x.T if singleton is None else np.expand_dims(x.T, singleton)
    _nifti(d / "in.nii", data)
    image, meta = read_image(d / "in.nii")
    assert np.array_equal(image, x)
    out = nib.load(str(write_nifti(d / "out.nii", image, like_meta=meta)))
    assert out.shape == data.shape and np.array_equal(np.asarray(out.dataobj), data)


def test_atomic_write_failure_keeps_old(tmp_path):
    target = tmp_path / "x.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".png")
            tmp.write_text("partial")
            raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_read_labels_rejects_lossy_and_colour(tmp_path):
    _pil(tmp_path / "a.jpg", pattern())
    _pil(tmp_path / "rgb.png", np.stack([pattern()] * 3, -1))
    with pytest.raises(CXRReadError, match="a.jpg"):
        read_labels(tmp_path / "a.jpg")
    with pytest.raises(CXRReadError, match="single-channel"):
        read_labels(tmp_path / "rgb.png")


# ---------------------------------------------------------------------------------------------- MONAI transforms
@pytest.mark.parametrize("case", ["png8", "dcm_mono1", "nii3d_last"])
def test_load_cxr_transforms(case, tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import LoadImage

    path = write_case(case, tmp_path)
    img = LoadCXR()(path)
    assert isinstance(img, MetaTensor) and img.shape == (1, H, W) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), EXPECTED, atol=1e-5)
    assert img.meta["filename_or_obj"] == str(path) and tuple(img.meta["spatial_shape"]) == (H, W)
    assert img.meta["format"] == {"png": "png", "dcm": "dicom", "nii": "nifti"}[case[:3]]
    d = LoadCXRd(keys=["image", "other"], allow_missing_keys=True)({"image": str(path), "label": 1})
    assert d["label"] == 1 and "other" not in d and torch.equal(d["image"], img)
    plain = LoadImage(reader=CXRReader(), image_only=True, ensure_channel_first=True)(path)
    assert torch.equal(plain.as_tensor(), img.as_tensor())
    with pytest.raises(KeyError):
        LoadCXRd(keys="other")({"image": str(path)})


def test_mixed_formats_collate(tmp_path):
    from monai.data import list_data_collate

    paths = [write_case(c, tmp_path / c) for c in ("png8", "dcm_mono2", "nii2d") if (tmp_path / c).mkdir() is None]
    batch = list_data_collate([LoadCXRd(keys="image")({"image": p}) for p in paths])
    assert batch["image"].shape == (3, 1, H, W)
    assert list(batch["image"].meta["format"]) == ["png", "dicom", "nifti"]
