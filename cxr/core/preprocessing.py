"""The one preprocessing path, shared by training, evaluation and the service.

Paper: decode -> divide by 255 -> resize to 224x224 -> grayscale to 3 channels.
PNG/JPEG are decoded with Pillow, DICOM files with pydicom (:mod:`cxr.core.dicom`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from cxr.core.dicom import DicomHeader

# Refuse absurd declared sizes before decoding (decompression bombs); a 299x299
# radiograph is 89k pixels, a full-resolution DICOM export rarely exceeds 40M.
MAX_IMAGE_PIXELS = 50_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageDecodeError(ValueError):
    """The bytes are not a readable image."""


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed (a decompression bomb)."""


def _to_gray_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> 8-bit grayscale array (H, W)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Scale by the bit depth actually used: 12-bit detector data stored in a 16-bit
        # PNG spans 0-4095, and dividing it by 65535 would make it nearly black.
        array = np.asarray(image, dtype=np.float64)
        bits = max(8, int(array.max(initial=0)).bit_length())
        return np.clip(np.rint(array * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def colourfulness(image: Image.Image) -> float:
    """How far an image is from grey: the mean over pixels of the spread between its
    red, green and blue values (0-255). 0 for grayscale modes and for colour files whose
    channels are equal (a radiograph saved as RGB or as a colour JPEG)."""
    if image.mode in ("1", "L", "LA", "I", "F") or image.mode in _SIXTEEN_BIT_MODES:
        return 0.0
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


@dataclass(frozen=True)
class DecodedImage:
    """An upload or data file as 8-bit grayscale, with what its format says of it."""

    gray: np.ndarray
    mode: str  # PIL mode, or the DICOM photometric interpretation
    format: str  # "PNG", "JPEG", ... (Pillow's name) or "DICOM"
    dicom: DicomHeader | None = None
    colour: float = 0.0  # :func:`colourfulness` of the file before it became grayscale


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> DecodedImage:
    """PNG, JPEG or DICOM bytes -> :class:`DecodedImage`."""
    if not data:
        raise ImageDecodeError("empty file")
    from cxr.core.dicom import decode_dicom, is_dicom  # here: it builds on our errors

    if is_dicom(data):
        gray, header = decode_dicom(data, max_pixels)
        return DecodedImage(gray, header.photometric or "", "DICOM", header)
    return _decode_pillow(data, max_pixels)


def decode_grayscale(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """Decode PNG/JPEG/DICOM bytes to an 8-bit grayscale array and the original mode."""
    decoded = decode_image(data, max_pixels)
    return decoded.gray, decoded.mode


def _decode_pillow(data: bytes, max_pixels: int) -> DecodedImage:
    """PNG/JPEG (any format Pillow reads) -> :class:`DecodedImage`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"image of {width}x{height} pixels exceeds {max_pixels} pixels"
                    )
                image.load()
                return DecodedImage(
                    _to_gray_array(image), image.mode, str(image.format),
                    colour=colourfulness(image),
                )  # fmt: skip
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as error:
        raise ImageDecodeError("not a readable image: unrecognised format") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"not a readable image: {error}") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"decompression bomb refused: {error}") from error


def to_model_input(gray: np.ndarray, image_size: int) -> np.ndarray:
    """8-bit grayscale (H, W) -> float32 (image_size, image_size, 3) in [0, 1].

    The one preprocessing transform: training, ``cxr evaluate`` and the BentoML service
    all go through it, so a served prediction equals an evaluated one.
    """
    scaled = gray.astype(np.float32) / 255.0
    resized = Image.fromarray(scaled).resize((image_size, image_size), Image.Resampling.BILINEAR)
    single = np.asarray(resized, dtype=np.float32)
    return np.repeat(single[:, :, None], 3, axis=2)


def preprocess_image(data: bytes, image_size: int) -> np.ndarray:
    """Image bytes -> model input: :func:`decode_grayscale` then :func:`to_model_input`."""
    gray, _ = decode_grayscale(data)
    return to_model_input(gray, image_size)
