"""DICOM uploads to the real BentoML server: films built from real radiographs get the PNG's
answer, bad DICOM gets a 4xx naming why, and no patient identifier is logged or stored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1

from cxr.serve.prediction_log import count_rows, create_log_engine, read_predictions
from cxr.serve.server_process import start_server
from tests.code.test_dicom import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, make_dicom, png_gray
from tests.conftest import real_images, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
# what make_dicom writes in the header and must appear in no log, table or file
IDENTIFIERS = [*FAKE_PATIENT_NAME.split("^"), FAKE_PATIENT_ID, "ACC-7Q3X9-ZZKV", "19010203"]
FILMS = {  # name: (photometric, bits stored, window, rescale, transfer syntax)
    "8bit-mono2": ("MONOCHROME2", 8, None, None, ExplicitVRLittleEndian),
    "12bit-mono1-window": ("MONOCHROME1", 12, (2048, 4096), None, ExplicitVRLittleEndian),
    "12bit-mono2-window-j2k": ("MONOCHROME2", 12, (2048, 4096), None, JPEG2000Lossless),
    "16bit-mono1-rescale": ("MONOCHROME1", 16, None, (1.0, -1024.0), ExplicitVRLittleEndian),
}


@pytest.fixture(scope="module")
def dicom_server(packaged_model: str, tmp_path_factory: pytest.TempPathFactory):
    """``bentoml serve`` of the packaged test model; its output goes to ``serve.log`` and
    its prediction log to ``predictions.db``, both in the returned folder."""
    folder = tmp_path_factory.mktemp("dicom-serve")
    log_url = f"sqlite:///{folder / 'predictions.db'}"
    running = start_server(
        {"CXR_SERVE__MODEL_TAG": packaged_model, "CXR_SERVE__PREDICTION_LOG_URL": log_url},
        log_file=folder / "serve.log",
    )
    client = httpx.Client(base_url=running.url, timeout=60)
    yield client, create_log_engine(log_url), folder
    client.close()
    running.stop()


def _predict(client: httpx.Client, data: bytes, name: str = "film.dcm") -> httpx.Response:
    return client.post("/predict", files={"image": (name, data, "application/dicom")})


def test_a_dicom_film_gets_the_pngs_answer_and_its_header_is_logged(
    dicom_server, packaged_model: str, tmp_path: Path
) -> None:
    client, log, _ = dicom_server
    before = count_rows(log)["predictions"]
    paths = real_images("COVID", 2, offset=120) + real_images("Normal", 2, offset=120)
    served = {}  # film file -> served probability
    for path in paths:
        label = "COVID" if path in paths[:2] else "Normal"
        folder = tmp_path / "COVID-19_Radiography_Dataset" / label / "images"
        folder.mkdir(parents=True, exist_ok=True)
        png = _predict(client, path.read_bytes(), path.name)
        assert png.status_code == 200, png.text
        for name, (photometric, bits, window, rescale, syntax) in FILMS.items():
            film = make_dicom(
                png_gray(path), photometric=photometric, bits_stored=bits, window=window,
                rescale=rescale, modality="CR" if bits == 16 else "DX", transfer_syntax=syntax,
            )  # fmt: skip
            answer = _predict(client, film)
            assert answer.status_code == 200, (name, answer.text)
            body = answer.json()
            difference = abs(body["covid_probability"] - png.json()["covid_probability"])
            assert difference < 1e-3, (path.name, name, difference)
            assert body["label"] == png.json()["label"]
            (folder / f"{path.stem}-{name}.dcm").write_bytes(film)
            served[f"{path.stem}-{name}.dcm"] = body["covid_probability"]
    logged = read_predictions(log).iloc[before:]
    assert len(logged) == len(paths) * (1 + len(FILMS))
    films = logged.loc[logged["modality"].notna()]
    assert len(films) == len(served) and set(films["modality"]) == {"DX", "CR"}
    assert set(films["view_position"]) == {"PA"} and set(films["bits_stored"]) == {8, 12, 16}
    assert set(films["manufacturer"]) == {"CXR Test Devices"}
    assert set(films["mode"]) == {"MONOCHROME1", "MONOCHROME2"}
    assert logged.loc[logged["modality"].isna(), "mode"].eq("L").all()  # the PNGs

    # `cxr evaluate` on a folder of the same films answers what the service answered
    csv = tmp_path / "evaluated.csv"
    result = run_cli(
        "evaluate", "--model", packaged_model, "--data-dir", str(tmp_path), "--predictions",
        str(csv),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = pd.read_csv(csv)
    evaluated.index = evaluated["path"].map(lambda p: Path(p).name)
    assert set(evaluated.index) == set(served)
    for name, probability in served.items():
        assert abs(evaluated.loc[name, "covid_probability"] - probability) < 1e-5, name


def test_bad_dicoms_get_a_4xx_naming_why_and_the_service_keeps_serving(dicom_server) -> None:
    client, log, _ = dicom_server
    before = count_rows(log)
    gray = png_gray(real_images("COVID", 1, offset=130)[0])
    good = make_dicom(gray, photometric="MONOCHROME1", bits_stored=12, window=(2048, 4096))
    pydicom_file = {n: Path(get_testdata_file(n, download=False)).read_bytes() for n in
                    ("CT_small.dcm", "MR_small.dcm")}  # fmt: skip
    refused = {  # name: (bytes, status, words the answer must contain)
        "ct": (pydicom_file["CT_small.dcm"], 422, "modality CT is not a radiograph"),
        "mr": (pydicom_file["MR_small.dcm"], 422, "modality MR is not a radiograph"),
        "multi-frame": (make_dicom(gray, frames=2), 422, "2 frames"),
        "lateral": (make_dicom(gray, view_position="LL"), 422, "lateral view"),
        "jpeg-lossless": (
            make_dicom(gray, bits_stored=12, transfer_syntax=JPEGLosslessSV1),
            415,
            "transfer syntax JPEG Lossless, Non-Hierarchical, First-Order Prediction",
        ),
        "truncated": (good[: len(good) // 2], 400, "truncated"),
        "truncated-header": (good[:300], 400, "no pixel data"),
        "no-pixel-data": (make_dicom(gray, pixel_data=False), 400, "no pixel data"),
    }
    for name, (data, status, words) in refused.items():
        answer = _predict(client, data)
        assert answer.status_code == status, (name, answer.text)
        assert words in answer.json()["error"], (name, answer.json())
        assert client.get("/readyz").status_code == 200, name
    assert _predict(client, good).status_code == 200
    after = count_rows(log)
    assert after["rejections"] - before["rejections"] == len(refused)
    assert after["predictions"] - before["predictions"] == 1


def test_no_patient_identifier_reaches_the_log_database_or_the_service_output(
    dicom_server,
) -> None:
    client, log, folder = dicom_server
    gray = png_gray(real_images("Normal", 1, offset=140)[0])
    assert _predict(client, make_dicom(gray, bits_stored=12)).status_code == 200
    assert _predict(client, make_dicom(gray, view_position="RL")).status_code == 422
    assert _predict(client, make_dicom(gray)[:-100]).status_code == 400
    files = sorted(p for p in folder.iterdir() if p.is_file())  # db, its WAL, serve.log
    assert {"predictions.db", "serve.log"} <= {p.name for p in files}
    assert "method=POST,path=/predict" in (folder / "serve.log").read_text()  # it does log
    for path in files:
        content = path.read_bytes()
        for identifier in IDENTIFIERS:
            assert identifier.encode() not in content, (path.name, identifier)
    tables = read_predictions(log).to_csv() + str(count_rows(log))
    assert not [i for i in IDENTIFIERS if i in tables]
