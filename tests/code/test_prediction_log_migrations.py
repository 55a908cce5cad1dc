"""Alembic migrations of the prediction log, on SQLite and on a real PostgreSQL server: a
log written by an earlier version is upgraded in place without losing a row, the newest
revision is exactly the module's tables, and processes starting at once on an empty
database do not collide."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cxr.serve.prediction_log import (
    BASELINE,
    MIGRATIONS,
    OOD_AND_DICOM,
    alembic_config,
    count_rows,
    create_log_engine,
    log_prediction,
    metadata,
    read_predictions,
)

STATS = ["mean_intensity", "std_intensity", "entropy", "sharpness", "dark_fraction"]
NEW_COLUMNS = [
    "in_distribution", "ood_score", "modality", "view_position", "manufacturer", "bits_stored"
]  # fmt: skip


def _previous_version_tables() -> sa.MetaData:
    """The log's tables as the version before migrations defined them (commit 65d2ae0,
    ``metadata.create_all`` and no alembic_version table)."""
    old = sa.MetaData()
    sa.Table(
        "predictions",
        old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("model_tag", sa.String(200), nullable=False),
        sa.Column("covid_probability", sa.Float, nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        *[sa.Column(name, sa.Float, nullable=False) for name in STATS],
    )
    sa.Table(
        "rejections",
        old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
    )
    return old


def _old_row(i: int, start: datetime) -> dict:
    return {
        "created_at": start + timedelta(seconds=i), "request_id": f"old-{i}",
        "model_tag": "cxr-hybrid:old", "covid_probability": i / 100, "label": "Normal",
        "threshold": 0.5, "latency_ms": 10.0 + i, "width": 256, "height": 256, "mode": "L",
        "bytes": 5000 + i, **{name: float(i) for name in STATS},
    }  # fmt: skip


def _new_row() -> dict:
    return {
        "request_id": uuid.uuid4().hex, "model_tag": "cxr-hybrid:new", "covid_probability": 0.9,
        "label": "COVID", "threshold": 0.5, "latency_ms": 8.0, "width": 299, "height": 299,
        "mode": "L", "bytes": 1000, **dict.fromkeys(STATS, 1.0), "in_distribution": True,
        "ood_score": 0.2, "modality": "DX", "view_position": "AP", "manufacturer": "ACME",
        "bits_stored": 12,
    }  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'predictions.db'}"
    return request.getfixturevalue("postgres_url")


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _head() -> str:
    with sa.create_engine("sqlite://").connect() as connection:
        return ScriptDirectory.from_config(alembic_config(connection)).get_current_head()


def test_the_migrations_are_a_line_from_the_baseline_to_the_ood_and_dicom_columns() -> None:
    with sa.create_engine("sqlite://").connect() as connection:
        script = ScriptDirectory.from_config(alembic_config(connection))
        revisions = [r.revision for r in script.walk_revisions("base", "heads")]
    assert revisions == [OOD_AND_DICOM, BASELINE] and _head() == OOD_AND_DICOM
    assert MIGRATIONS.joinpath("env.py").is_file()


def test_a_log_of_the_previous_version_is_upgraded_in_place(log_url: str) -> None:
    old = sa.create_engine(log_url)
    _previous_version_tables().create_all(old)
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    rows = [_old_row(i, start) for i in range(25)]
    with old.begin() as connection:
        connection.execute(_previous_version_tables().tables["predictions"].insert(), rows)
        connection.execute(
            _previous_version_tables().tables["rejections"].insert(),
            [{"created_at": start, "request_id": "bad", "status_code": 400, "reason": "no",
              "bytes": 3}],
        )  # fmt: skip
        before = [tuple(r) for r in connection.execute(sa.text("SELECT * FROM predictions"))]
    old.dispose()
    assert _revision(log_url) is None

    engine = create_log_engine(log_url)  # the service or monitoring starting on it
    assert _revision(log_url) == _head()
    assert count_rows(engine) == {"predictions": 25, "rejections": 1}
    with engine.connect() as connection:
        columns = [c["name"] for c in sa.inspect(connection).get_columns("predictions")]
        after = connection.execute(sa.select(*[sa.column(c) for c in columns[:-6]]).select_from(
            sa.table("predictions")).order_by(sa.column("id"))).all()  # fmt: skip
    assert columns[-6:] == NEW_COLUMNS
    assert [tuple(r) for r in after] == sorted(before)  # every old value, unchanged
    logged = read_predictions(engine)
    assert logged["request_id"].tolist()[:25] == [f"old-{i}" for i in range(25)]
    assert logged["created_at"].iloc[0] == start  # the same instant, in UTC
    assert logged[NEW_COLUMNS].isna().all().all()
    log_prediction(engine, _new_row())  # the new version writes the six columns
    assert count_rows(engine)["predictions"] == 26
    assert read_predictions(engine).iloc[-1]["modality"] == "DX"
    create_log_engine(log_url).dispose()  # at head: a second start changes nothing
    assert count_rows(engine)["predictions"] == 26 and _revision(log_url) == _head()


def test_a_log_made_by_create_all_with_the_new_columns_is_stamped_not_altered(
    log_url: str,
) -> None:
    """The version between the two (the six columns by ``metadata.create_all``, no
    migrations yet) is recognised: stamped at that revision, nothing added twice."""
    engine = sa.create_engine(log_url)
    metadata.create_all(engine)
    log_prediction(engine, _new_row())
    engine.dispose()
    engine = create_log_engine(log_url)
    assert _revision(log_url) == OOD_AND_DICOM
    assert count_rows(engine)["predictions"] == 1


def test_head_is_the_modules_tables(log_url: str) -> None:
    engine = create_log_engine(log_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []


def test_downgrade_to_the_baseline_and_back_keeps_the_rows(log_url: str) -> None:
    engine = create_log_engine(log_url)
    log_prediction(engine, _new_row())
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), BASELINE)
    with engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("predictions")}
    assert columns.isdisjoint(NEW_COLUMNS) and _revision(log_url) == BASELINE
    engine.dispose()
    engine = create_log_engine(log_url)
    assert _revision(log_url) == _head() and count_rows(engine)["predictions"] == 1
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []


def _start(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait(timeout=60)
    engine = create_log_engine(url)
    log_prediction(engine, _new_row())
    engine.dispose()


def test_processes_starting_at_once_on_an_empty_database_do_not_collide(log_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    starters = [context.Process(target=_start, args=(log_url, barrier)) for _ in range(4)]
    for process in starters:
        process.start()
    for process in starters:
        process.join(timeout=180)
    assert [process.exitcode for process in starters] == [0] * 4
    assert _revision(log_url) == _head()
    assert count_rows(create_log_engine(log_url)) == {"predictions": 4, "rejections": 0}
