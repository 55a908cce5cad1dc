"""The one preprocessing function: any real export mode in, the paper's tensor out."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from cxr.core.preprocessing import (
    ImageDecodeError,
    ImageTooLargeError,
    colourfulness,
    decode_grayscale,
    decode_image,
    preprocess_image,
)


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def gray() -> np.ndarray:
    """A 64x256 ramp over the whole 8-bit range."""
    return np.tile(np.arange(0, 256, dtype=np.uint8), (64, 1))


def test_output_is_paper_tensor(gray: np.ndarray) -> None:
    x = preprocess_image(_png(Image.fromarray(gray)), 224)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])


def test_modes_agree(gray: np.ndarray) -> None:
    base = preprocess_image(_png(Image.fromarray(gray)), 64)
    rgb = Image.fromarray(np.stack([gray] * 3, axis=2))
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)
    twelve_in_sixteen = Image.fromarray(np.rint(gray * (4095 / 255)).astype(np.uint16))
    for variant in (
        rgb,
        rgb.convert("RGBA"),
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
        sixteen,
        twelve_in_sixteen,
    ):
        assert np.abs(preprocess_image(_png(variant), 64) - base).max() < 0.02, variant.mode
    jpeg = preprocess_image(_png(Image.fromarray(gray), "JPEG"), 64)
    assert np.abs(jpeg - base).mean() < 0.02


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", _png(Image.new("L", (50, 50)))[:60]],
    ids=["empty", "text", "truncated"],
)
def test_bad_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_grayscale(data)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares a huge image (valid CRC, no real pixel data)."""
    png = _png(Image.new("L", (8, 8)))
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    return png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]


def test_decompression_bomb_is_refused() -> None:
    with pytest.raises(ImageTooLargeError, match="exceeds"):
        decode_grayscale(bomb_png())


def test_colourfulness_is_zero_for_grey_in_any_mode_and_high_for_colour(gray: np.ndarray) -> None:
    from cxr.core.ood import COLOUR_TOLERANCE, in_colour

    grey_rgb = Image.fromarray(gray).convert("RGB")
    for data in (_png(Image.fromarray(gray)), _png(grey_rgb), _png(grey_rgb, "JPEG")):
        assert decode_image(data).colour == 0.0
    tinted = np.stack([gray, gray // 2, gray // 4], axis=2)
    decoded = decode_image(_png(Image.fromarray(tinted)))
    assert decoded.colour == pytest.approx(np.mean(gray - gray // 4))
    assert decoded.colour > COLOUR_TOLERANCE and in_colour(decoded.colour)
    assert not in_colour(0.0) and colourfulness(Image.fromarray(gray)) == 0.0
