"""The prediction log on SQLite (WAL) and on a real PostgreSQL server: concurrent writers
from several processes lose nothing, windows are read in UTC, request ids are unique."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from cxr.core.image_stats import STAT_COLUMNS
from cxr.serve.prediction_log import (
    count_rows,
    create_log_engine,
    log_prediction,
    log_rejection,
    now,
    read_predictions,
)


def _row() -> dict:
    return {
        "request_id": uuid.uuid4().hex, "model_tag": "m:1", "covid_probability": 0.7,
        "label": "COVID", "threshold": 0.5, "latency_ms": 12.0, "width": 299, "height": 299,
        "mode": "L", "bytes": 1000, **dict.fromkeys(STAT_COLUMNS, 1.0),
    }  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty log: a SQLite file in a folder that does not exist yet, or a new database
    on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log' / 'predictions.db'}"
    return request.getfixturevalue("postgres_url")


def _writer(url: str, n: int) -> None:
    engine = create_log_engine(url)
    for _ in range(n):
        log_prediction(engine, _row())
    engine.dispose()


def test_concurrent_process_writers(log_url: str) -> None:
    engine = create_log_engine(log_url)
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(log_url, 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    log_rejection(engine, "r1", 400, "not an image", 12)
    assert count_rows(engine) == {"predictions": 200, "rejections": 1}
    assert read_predictions(engine)["request_id"].is_unique


def test_read_window(log_url: str) -> None:
    engine = create_log_engine(log_url)
    start = now()
    for _ in range(3):
        log_prediction(engine, _row())
    end = now()
    window = read_predictions(engine, start=start)
    assert len(window) == 3
    assert str(window["created_at"].dt.tz) == "UTC"  # SQLite and PostgreSQL alike
    assert (window["created_at"] >= pd.Timestamp(start)).all()
    assert (window["created_at"] <= pd.Timestamp(end)).all()
    assert len(read_predictions(engine, start=now() + timedelta(seconds=1))) == 0
    assert len(read_predictions(engine, end=start)) == 0
    # the same instant in another zone, and naive UTC, select the same window
    kolkata = timezone(timedelta(hours=5, minutes=30))
    assert len(read_predictions(engine, start=start.astimezone(kolkata))) == 3
    assert len(read_predictions(engine, end=end.astimezone(kolkata))) == 3
    assert len(read_predictions(engine, start=start.replace(tzinfo=None))) == 3
    assert len(read_predictions(engine, end=start.astimezone(UTC).replace(tzinfo=None))) == 0


def test_duplicate_request_id_is_refused(log_url: str) -> None:
    engine = create_log_engine(log_url)
    row = _row()
    log_prediction(engine, row)
    with pytest.raises(sa.exc.IntegrityError):
        log_prediction(engine, row)
    assert count_rows(engine)["predictions"] == 1


def test_new_columns_are_written_and_read(log_url: str) -> None:
    engine = create_log_engine(log_url)
    extra = {
        "in_distribution": False, "ood_score": 3.5, "modality": "DX", "view_position": "PA",
        "manufacturer": "ACME", "bits_stored": 12,
    }  # fmt: skip
    log_prediction(engine, {**_row(), **extra})
    log_prediction(engine, _row())
    logged = read_predictions(engine)
    assert logged.iloc[0][list(extra)].tolist() == list(extra.values())
    assert logged.iloc[1][list(extra)].isna().all()


def test_an_unreachable_database_is_a_clear_error() -> None:
    from cxr.core.errors import DataInputError

    url = "postgresql+psycopg://cxr:secret@127.0.0.1:9/cxr?connect_timeout=5"
    with pytest.raises(DataInputError, match="could not be opened") as error:
        create_log_engine(url)
    assert "cxr:***@127.0.0.1:9/cxr" in str(error.value) and "secret" not in str(error.value)
