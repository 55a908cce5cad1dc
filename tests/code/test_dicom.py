"""DICOM decoding: films built with pydicom from real PNGs decode to the PNG's pixels, and
every DICOM the service must refuse raises the error that names why."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from cxr.core.dicom import (
    DicomError,
    NotARadiographError,
    UnsupportedTransferSyntaxError,
    decode_dicom,
    is_dicom,
    radiograph_refusal,
)
from cxr.core.preprocessing import (
    ImageTooLargeError,
    decode_grayscale,
    decode_image,
    preprocess_image,
)
from tests.conftest import real_images

FAKE_PATIENT_NAME = "Zyxwvut^Qqqqxenia"  # distinctive: searched for in logs and run folders
FAKE_PATIENT_ID = "PID-7Q3X9-ZZKV"
SOP_CLASSES = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}


def make_dicom(
    gray: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 8,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    modality: str = "DX",
    view_position: str | None = "PA",
    frames: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_data: bool = True,
) -> bytes:
    """A DICOM Part 10 file whose displayed image is ``gray`` (8-bit, MONOCHROME2 sense).

    The stored values span the ``bits_stored`` range (``gray * (2**bits - 1) / 255``,
    reversed for MONOCHROME1); ``window`` adds (centre, width) and ``rescale`` (slope,
    intercept), which leaves a full-range display as it is (a linear modality LUT moves
    the values and their range together).
    The header carries :data:`FAKE_PATIENT_NAME` and :data:`FAKE_PATIENT_ID`."""
    top = 2**bits_stored - 1
    stored = np.rint(gray.astype(np.float64) * (top / 255.0))
    if photometric == "MONOCHROME1":
        stored = top - stored
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    stored = stored.astype(dtype)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES.get(modality, "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = FAKE_PATIENT_NAME, FAKE_PATIENT_ID
    ds.PatientBirthDate, ds.AccessionNumber = "19010203", "ACC-7Q3X9-ZZKV"
    ds.Modality, ds.Manufacturer = modality, "CXR Test Devices"
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if frames > 1:
        ds.NumberOfFrames = frames
        stored = np.stack([stored] * frames)
    if pixel_data:
        ds.PixelData = stored.tobytes()
        if transfer_syntax == RLELossless:
            ds.compress(RLELossless, encoding_plugin="pydicom")
        elif transfer_syntax == JPEG2000Lossless:  # a real code stream, encoded by Pillow
            buffer = io.BytesIO()
            Image.fromarray(stored).save(buffer, "JPEG2000", irreversible=False, no_jp2=True)
            ds.file_meta.TransferSyntaxUID = transfer_syntax
            ds.PixelData = pydicom.encaps.encapsulate([buffer.getvalue()])
            ds["PixelData"].VR = "OB"
        elif transfer_syntax != ExplicitVRLittleEndian:  # pixel data declared, not encoded
            ds.file_meta.TransferSyntaxUID = transfer_syntax
            ds.PixelData = pydicom.encaps.encapsulate([stored.tobytes()])
            ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    return png_gray(real_images("COVID", 1, offset=5)[0])


# photometric, bits stored, window (centre, width) spanning the whole stored range, rescale
VARIANTS = {
    "8bit-mono2": ("MONOCHROME2", 8, None, None),
    "8bit-mono1-window": ("MONOCHROME1", 8, (128, 256), None),
    "12bit-mono2-window": ("MONOCHROME2", 12, (2048, 4096), None),
    "12bit-mono1-window": ("MONOCHROME1", 12, (2048, 4096), None),
    "12bit-mono1": ("MONOCHROME1", 12, None, None),
    "16bit-mono2-rescale": ("MONOCHROME2", 16, None, (1.0, -1024.0)),
}


@pytest.mark.real_data
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dicom_from_a_real_png_decodes_to_the_png(radiograph: np.ndarray, variant: str) -> None:
    photometric, bits, window, rescale = VARIANTS[variant]
    data = make_dicom(
        radiograph, photometric=photometric, bits_stored=bits, window=window, rescale=rescale
    )
    assert is_dicom(data)
    decoded = decode_image(data)
    assert decoded.format == "DICOM" and decoded.mode == photometric
    assert decoded.dicom is not None and decoded.dicom.bits_stored == bits
    assert decoded.gray.dtype == np.uint8 and decoded.gray.shape == radiograph.shape
    difference = np.abs(decoded.gray.astype(int) - radiograph.astype(int))
    assert difference.max() <= 1, variant  # rounding through the wider range only
    model_input = preprocess_image(data, 64)
    np.testing.assert_allclose(model_input, preprocess_image(_png(radiograph), 64), atol=0.005)


@pytest.mark.real_data
@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_compressed_films_decode_without_plugins(
    radiograph: np.ndarray, syntax: str, bits: int
) -> None:
    data = make_dicom(
        radiograph, photometric="MONOCHROME1", bits_stored=bits, transfer_syntax=syntax
    )
    gray, header = decode_dicom(data, 10**8)
    assert header.transfer_syntax == syntax
    assert np.abs(gray.astype(int) - radiograph.astype(int)).max() <= 1


def test_window_centre_width_is_applied_as_a_viewer_does() -> None:
    # 12-bit stored 0..4095, rescaled to -1024..3071; window centre 500, width 1001
    stored = np.array([[0, 1024, 1524, 2024, 4095]], dtype=np.float64)
    gray = stored * (255 / 4095)  # make_dicom's stored values are these
    data = make_dicom(gray, bits_stored=12, window=(500, 1001), rescale=(1.0, -1024.0))
    decoded, _ = decode_dicom(data, 10**6)
    values = stored - 1024  # the modality LUT's output
    # DICOM PS3.3 C.11.2.1.2.1 (LINEAR), output range -1024..3071 shown as 0..255
    expected = np.clip(((values - 499.5) / 1000 + 0.5), 0, 1) * 255
    np.testing.assert_array_equal(decoded, np.rint(expected).astype(np.uint8))
    assert decoded.tolist() == [[0, 0, 128, 255, 255]]
    # the same stored values as MONOCHROME1: the same window, shown inverted
    same_stored = make_dicom(
        255 - gray, photometric="MONOCHROME1", bits_stored=12, window=(500, 1001),
        rescale=(1.0, -1024.0),
    )  # fmt: skip
    assert decode_dicom(same_stored, 10**6)[0].tolist() == [[255, 255, 127, 0, 0]]


def test_decode_grayscale_keeps_its_contract_for_dicom() -> None:
    gray = np.tile(np.arange(256, dtype=np.uint8), (80, 1))
    array, mode = decode_grayscale(make_dicom(gray, photometric="MONOCHROME1", bits_stored=12))
    assert mode == "MONOCHROME1" and np.abs(array.astype(int) - gray).max() <= 1


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicoms_ct_and_mr_files_are_not_radiographs(name: str) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom ships {name}"
    data = open(path, "rb").read()
    _, header = decode_dicom(data, 10**7)  # readable, but refused by the service
    modality = name.split("_")[0]
    assert f"modality {modality} is not a radiograph" in (radiograph_refusal(header) or "")


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return np.tile(np.arange(0, 256, 2, dtype=np.uint8), (96, 1))


def test_refusals_name_their_reason(small: np.ndarray) -> None:
    lateral = decode_dicom(make_dicom(small, view_position="LL"), 10**6)[1]
    assert "lateral" in radiograph_refusal(lateral)
    six_bits = decode_dicom(make_dicom(small, bits_stored=6), 10**6)[1]
    assert "BitsStored 6 is outside 8-16" in radiograph_refusal(six_bits)
    assert radiograph_refusal(decode_dicom(make_dicom(small, modality="CR"), 10**6)[1]) is None
    assert radiograph_refusal(decode_dicom(make_dicom(small, view_position=None), 10**6)[1]) is None
    cases = {
        "multi-frame": (make_dicom(small, frames=3), NotARadiographError, "3 frames"),
        "no pixels": (make_dicom(small, pixel_data=False), DicomError, "no pixel data"),
        "jpeg lossless": (
            make_dicom(small, bits_stored=12, transfer_syntax=JPEGLosslessSV1),
            UnsupportedTransferSyntaxError,
            "JPEG Lossless, Non-Hierarchical, First-Order Prediction",
        ),
    }
    for name, (data, error, match) in cases.items():
        with pytest.raises(error, match=match):
            decode_dicom(data, 10**6)
        assert name


def test_truncated_dicom_is_a_decode_error(small: np.ndarray) -> None:
    data = make_dicom(small, bits_stored=12)
    for cut in (140, len(data) // 2, len(data) - 10):
        with pytest.raises(DicomError):
            decode_image(data[:cut])


def test_declared_huge_dicom_is_refused_before_decoding(small: np.ndarray) -> None:
    with pytest.raises(ImageTooLargeError, match="exceeds"):
        decode_dicom(make_dicom(small), max_pixels=1000)


def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return buffer.getvalue()
