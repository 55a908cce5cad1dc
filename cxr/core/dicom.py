"""DICOM radiographs (CR/DX) to the 8-bit grayscale array a viewer shows.

Pixel pipeline (DICOM PS3.3 C.11, PS3.4 N.2): stored values -> modality LUT (rescale
slope/intercept or LUT) -> VOI LUT or window centre/width -> scaled from the output range
to 0-255 -> inverted for MONOCHROME1. Without a VOI transform the full range that
``BitsStored`` allows is shown (as a 12-bit PNG is read), so 12- and 16-bit data look as
a viewer shows them.

Only the header fields of :class:`DicomHeader` are read from a file: no patient
identifier (name, ID, birth date, accession number, ...) is ever looked at, so none can
reach a log, an answer or a run folder. Messages name tags and values of those fields
only; pydicom's own exception texts and warnings (which may quote any element's value)
are kept out of them.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID

from cxr.core.preprocessing import ImageDecodeError, ImageTooLargeError

RADIOGRAPH_MODALITIES = ("CR", "DX")  # computed and digital radiography
GRAYSCALE_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
LATERAL_VIEWS = ("LL", "RL", "LAT")  # (0018,5101) View Position of a side view
SUPPORTED_BITS_STORED = (8, 16)  # inclusive range of a CR/DX film's BitsStored
# pydicom checks element values as it converts them and logs what it finds, quoting the
# value ("Invalid value for VR PN: ..."): never for our films, which may carry names.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


class DicomError(ImageDecodeError):
    """A DICOM file without one readable image (truncated, no pixel data, malformed)."""


class UnsupportedTransferSyntaxError(DicomError):
    """The pixel data is encoded in a transfer syntax no installed decoder reads."""


class NotARadiographError(DicomError):
    """A readable DICOM object that is not one frontal chest radiograph."""


@dataclass(frozen=True)
class DicomHeader:
    """What may be said of a film: never a patient, study or institution identifier."""

    modality: str | None
    view_position: str | None
    manufacturer: str | None
    bits_stored: int | None
    photometric: str | None
    frames: int
    transfer_syntax: str

    def transfer_syntax_name(self) -> str:
        uid = UID(self.transfer_syntax)
        return f"{uid.name} ({uid})" if uid.is_transfer_syntax else f"unknown ({uid})"


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _text(dataset: pydicom.Dataset, keyword: str, limit: int) -> str | None:
    value = dataset.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text[:limit] or None


def read_header(dataset: pydicom.Dataset) -> DicomHeader:
    """The film's description from the allowed fields only."""
    try:
        bits = dataset.get("BitsStored")
        frames = int(dataset.get("NumberOfFrames") or 1)
        bits_stored = int(bits) if bits is not None else None
    except (TypeError, ValueError) as error:
        raise DicomError("malformed DICOM header: BitsStored or NumberOfFrames") from error
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return DicomHeader(
        modality=_text(dataset, "Modality", 16),
        view_position=_text(dataset, "ViewPosition", 16),
        manufacturer=_text(dataset, "Manufacturer", 64),
        bits_stored=bits_stored,
        photometric=_text(dataset, "PhotometricInterpretation", 16),
        frames=frames,
        transfer_syntax=str(syntax or pydicom.uid.ImplicitVRLittleEndian),
    )


def radiograph_refusal(header: DicomHeader) -> str | None:
    """Why the service refuses this film (``None``: a frontal CR/DX radiograph)."""
    if header.modality not in RADIOGRAPH_MODALITIES:
        return (
            f"DICOM modality {header.modality or 'missing'} is not a radiograph: "
            f"send a chest X-ray (modality {' or '.join(RADIOGRAPH_MODALITIES)})"
        )
    if header.view_position in LATERAL_VIEWS:
        return (
            f"DICOM view position {header.view_position} is a lateral view: "
            "the model reads frontal (PA/AP) chest X-rays only"
        )
    if header.photometric not in GRAYSCALE_PHOTOMETRIC:
        return f"DICOM photometric interpretation {header.photometric} is not grayscale"
    low, high = SUPPORTED_BITS_STORED
    if header.bits_stored is None or not low <= header.bits_stored <= high:
        return f"DICOM BitsStored {header.bits_stored} is outside {low}-{high} for a radiograph"
    return None


def _stored_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """Smallest and largest value ``BitsStored`` allows, through the modality LUT."""
    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 0:
        ends = np.array([0, 2**bits - 1], dtype=np.float64)
    else:
        ends = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.float64)
    if dataset.get("ModalityLUTSequence"):
        descriptor = dataset.ModalityLUTSequence[0].LUTDescriptor
        return 0.0, float(2 ** int(descriptor[2]) - 1)
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    low, high = sorted(ends * slope + intercept)
    return float(low), float(high)


def _voi_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """Output range of the VOI transform pydicom applies (LUT preferred to a window)."""
    sequence = dataset.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") and sequence[0].get("LUTData"):
        return 0.0, float(2 ** int(sequence[0].LUTDescriptor[2]) - 1)
    return _stored_range(dataset)  # a window (or none) keeps the modality LUT's range


def _to_viewer_gray(dataset: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored values -> 8-bit grayscale as displayed (MONOCHROME2 sense: 0 is black)."""
    photometric = str(dataset.PhotometricInterpretation)
    if photometric not in GRAYSCALE_PHOTOMETRIC:  # colour: luminance, no LUTs
        rgb = np.asarray(stored)
        if rgb.ndim != 3 or rgb.dtype != np.uint8:
            raise DicomError(f"DICOM photometric interpretation {photometric} is not supported")
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.uint8)
    values = apply_voi_lut(apply_modality_lut(stored, dataset), dataset)
    low, high = _voi_range(dataset)
    scaled = (np.asarray(values, dtype=np.float64) - low) * (255.0 / max(high - low, 1e-12))
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def decode_dicom(data: bytes, max_pixels: int) -> tuple[np.ndarray, DicomHeader]:
    """DICOM bytes -> (8-bit grayscale array (H, W), header); one frame only.

    Raises :class:`DicomError` (unreadable), :class:`UnsupportedTransferSyntaxError`,
    :class:`NotARadiographError` (multi-frame) or ``ImageTooLargeError``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings may quote any element's value
        try:
            dataset = pydicom.dcmread(io.BytesIO(data))
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as error:
            raise DicomError(
                f"not a readable DICOM file ({type(error).__name__}): truncated or malformed"
            ) from error
        header = read_header(dataset)
        if "PixelData" not in dataset:
            raise DicomError(
                "DICOM file has no pixel data (7FE0,0010): truncated, or not an image object"
            )
        if header.frames != 1:
            raise NotARadiographError(
                f"DICOM object has {header.frames} frames: send one single-frame radiograph"
            )
        try:
            rows, columns = int(dataset.Rows), int(dataset.Columns)
        except (AttributeError, TypeError, ValueError) as error:
            raise DicomError("DICOM header lacks Rows/Columns (0028,0010-0011)") from error
        if rows * columns > max_pixels:
            raise ImageTooLargeError(
                f"image of {columns}x{rows} pixels exceeds {max_pixels} pixels"
            )
        if header.bits_stored is None or header.bits_stored < 1:
            raise DicomError(f"DICOM BitsStored (0028,0101) is {header.bits_stored}")
        try:
            available = get_decoder(header.transfer_syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise UnsupportedTransferSyntaxError(
                f"DICOM transfer syntax {header.transfer_syntax_name()} cannot be decoded "
                "here: send it uncompressed (Explicit VR Little Endian), as RLE Lossless or as "
                "JPEG 2000"
            )
        try:
            stored = dataset.pixel_array
            gray = _to_viewer_gray(dataset, stored)
        except DicomError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, EOFError) as error:
            raise DicomError(
                f"DICOM pixel data cannot be decoded ({type(error).__name__}): truncated, "
                "corrupt or inconsistent with Rows, Columns and BitsAllocated"
            ) from error
    if gray.ndim != 2:
        raise DicomError(f"DICOM pixel data has shape {gray.shape}, not one 2-D image")
    return gray, header
