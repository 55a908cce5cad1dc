"""The prediction log: WAL SQLite, concurrent writers from several processes lose nothing."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import timedelta
from pathlib import Path

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


def _writer(url: str, n: int) -> None:
    engine = create_log_engine(url)
    for _ in range(n):
        log_prediction(engine, _row())
    engine.dispose()


def test_wal_mode_and_concurrent_process_writers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log' / 'predictions.db'}"
    engine = create_log_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(url, 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    log_rejection(engine, "r1", 400, "not an image", 12)
    assert count_rows(engine) == {"predictions": 200, "rejections": 1}


def test_read_window(tmp_path: Path) -> None:
    engine = create_log_engine(f"sqlite:///{tmp_path / 'p.db'}")
    start = now()
    for _ in range(3):
        log_prediction(engine, _row())
    assert len(read_predictions(engine, start=start)) == 3
    assert len(read_predictions(engine, start=now() + timedelta(seconds=1))) == 0
    assert len(read_predictions(engine, end=start)) == 0


def test_duplicate_request_id_is_refused(tmp_path: Path) -> None:
    engine = create_log_engine(f"sqlite:///{tmp_path / 'p.db'}")
    row = _row()
    log_prediction(engine, row)
    with pytest.raises(sa.exc.IntegrityError):
        log_prediction(engine, row)
    assert count_rows(engine)["predictions"] == 1
