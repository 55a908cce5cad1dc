"""DICOM films built from real radiographs against their PNGs: pixels and decoding time.

    .venv/bin/python benchmarks/dicom_decode.py                  # 25 images per class
    .venv/bin/python benchmarks/dicom_decode.py --images 5 --side 3000

For each real PNG of ``../shared/data`` (or ``$CXR_SHARED_DATA``), builds the films of
``FILMS`` with the tests' builder (``tests/code/test_dicom.py``: pydicom, both
photometric interpretations, 8/12/16 bits, window, rescale, JPEG 2000), decodes them with
:func:`cxr.core.preprocessing.decode_image` and reports the largest gray-level difference
to the PNG. Then times decoding plus :func:`to_model_input` (median) of one film resized
to ``--side`` pixels, uncompressed and as JPEG 2000, against a 16-bit PNG of it, and
prints the ratios.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless  # noqa: E402

from cxr.core.preprocessing import decode_image, to_model_input  # noqa: E402
from tests.code.test_dicom import make_dicom, png_gray  # noqa: E402
from tests.conftest import RELEASE  # noqa: E402

FILMS = {  # name: (photometric, bits stored, window, rescale, transfer syntax)
    "8bit-mono2": ("MONOCHROME2", 8, None, None, ExplicitVRLittleEndian),
    "8bit-mono1": ("MONOCHROME1", 8, None, None, ExplicitVRLittleEndian),
    "12bit-mono1-window": ("MONOCHROME1", 12, (2048, 4096), None, ExplicitVRLittleEndian),
    "12bit-mono2-window-j2k": ("MONOCHROME2", 12, (2048, 4096), None, JPEG2000Lossless),
    "16bit-mono2-rescale": ("MONOCHROME2", 16, None, (1.0, -1024.0), ExplicitVRLittleEndian),
    "16bit-mono1": ("MONOCHROME1", 16, None, None, ExplicitVRLittleEndian),
}
app = typer.Typer()


def _film(gray: np.ndarray, name: str) -> bytes:
    photometric, bits, window, rescale, syntax = FILMS[name]
    return make_dicom(
        gray, photometric=photometric, bits_stored=bits, window=window, rescale=rescale,
        transfer_syntax=syntax,
    )  # fmt: skip


def _median_seconds(data: bytes, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        to_model_input(decode_image(data).gray, 224)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


@app.command()
def main(
    images: Annotated[int, typer.Option(help="real images per class")] = 25,
    side: Annotated[int, typer.Option(help="side of the film that is timed")] = 2500,
    repeats: Annotated[int, typer.Option(help="timed decodes of each file")] = 5,
) -> None:
    paths = [
        p
        for c in ("COVID", "Normal")
        for p in sorted((RELEASE / c / "images").glob("*.png"))[:images]
    ]
    if not paths:
        raise typer.BadParameter(f"no real images under {RELEASE}")
    worst = dict.fromkeys(FILMS, 0)
    for path in paths:
        gray = png_gray(path)
        for name in FILMS:
            decoded = decode_image(_film(gray, name)).gray
            worst[name] = max(worst[name], int(np.abs(decoded.astype(int) - gray).max()))
    large = np.asarray(
        Image.fromarray(png_gray(paths[0])).resize((side, side), Image.Resampling.BILINEAR)
    )
    buffer = io.BytesIO()
    Image.fromarray(np.rint(large * (4095 / 255)).astype(np.uint16)).save(buffer, "PNG")
    files = {
        "png_16bit": buffer.getvalue(),
        "dicom_12bit": make_dicom(large, bits_stored=12, window=(2048, 4096)),
        "dicom_12bit_j2k": make_dicom(
            large, bits_stored=12, window=(2048, 4096), transfer_syntax=JPEG2000Lossless
        ),
    }
    seconds = {name: _median_seconds(data, repeats) for name, data in files.items()}
    print(
        json.dumps(
            {
                "images": len(paths),
                "max_gray_level_difference": worst,
                "timed_side": side,
                "megabytes": {n: round(len(d) / 1e6, 2) for n, d in files.items()},
                "decode_and_preprocess_s": {n: round(s, 4) for n, s in seconds.items()},
                "ratio_to_png": {n: round(s / seconds["png_16bit"], 2) for n, s in seconds.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    app()
