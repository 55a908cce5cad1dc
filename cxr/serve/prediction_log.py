"""Durable log of served predictions (and rejected requests) for drift monitoring.

SQLite in WAL mode by default; any SQLAlchemy URL (PostgreSQL through psycopg, e.g.
``postgresql://user:password@host:5432/cxr``) by configuration. Each answered request is one
committed row before the answer is returned (:class:`PredictionWriter` commits the rows of
concurrent requests together, in one transaction).

The schema is managed by Alembic (revisions in ``migrations/versions``): every engine made
by :func:`create_log_engine` first brings its database to the newest revision, in one
locked transaction, so that a service's workers (or a service and a monitoring run)
starting at once on an empty database do not race. A log created before migrations
existed (tables, no ``alembic_version``) is stamped with the revision its columns match,
then upgraded in place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from cxr.core.errors import DataInputError
from cxr.core.image_stats import STAT_COLUMNS

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the tables as the log had them before migrations
OOD_AND_DICOM = "0002"  # + in_distribution, ood_score and four DICOM header columns
# pg_advisory_xact_lock key that serialises migrations of one PostgreSQL database
_MIGRATION_LOCK = 0x43585201

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
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
    *[sa.Column(name, sa.Float, nullable=False) for name in STAT_COLUMNS],
    # Out-of-distribution check of the served model (null for models without a detector).
    sa.Column("in_distribution", sa.Boolean, nullable=True),
    sa.Column("ood_score", sa.Float, nullable=True),
    # DICOM uploads only, and never a patient identifier: what the header says of the film.
    sa.Column("modality", sa.String(16), nullable=True),
    sa.Column("view_position", sa.String(16), nullable=True),
    sa.Column("manufacturer", sa.String(64), nullable=True),
    sa.Column("bits_stored", sa.Integer, nullable=True),
)

rejections = sa.Table(
    "rejections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _migration_engine(url: str) -> sa.Engine:
    """A short-lived engine whose transactions hold the database's write lock: SQLite's
    ``BEGIN IMMEDIATE`` (the driver's own transaction handling off, SQLAlchemy's recipe),
    PostgreSQL's transaction-scoped advisory lock (taken in :func:`_locked`)."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        _sqlite_pragmas(dbapi_connection, record)

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def _locked(url: str) -> Iterator[sa.Connection]:
    """One transaction on the log's database that no other migration runs beside."""
    engine = _migration_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            yield connection
    finally:
        engine.dispose()


def alembic_config(connection: sa.Connection) -> Config:
    """Alembic's configuration for the log, built in code: the package's migrations,
    run on ``connection`` (``migrations/env.py`` takes it from ``attributes``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _unversioned_revision(connection: sa.Connection) -> str | None:
    """The revision a log made before migrations matches (tables, no alembic_version):
    the baseline, or the OOD/DICOM one when ``metadata.create_all`` already added those
    columns; None for a versioned or an empty database."""
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    if "alembic_version" in tables or "predictions" not in tables:
        return None
    columns = {column["name"] for column in inspector.get_columns("predictions")}
    return OOD_AND_DICOM if "in_distribution" in columns else BASELINE


def migrate(url: str) -> None:
    """Bring the log at ``url`` to the newest revision (creating it when empty)."""
    with _locked(url) as connection:
        if revision := _unversioned_revision(connection):
            command.stamp(alembic_config(connection), revision)
        command.upgrade(alembic_config(connection), "head")


def _shown(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def create_log_engine(url: str) -> sa.Engine:
    """Engine for the log, its database migrated to the newest revision first (tables
    created when missing; the SQLite folder too). An unreachable database is a
    :class:`DataInputError` that names it (password hidden)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        migrate(url)
    except sa.exc.OperationalError as error:
        raise DataInputError(
            f"prediction log database {_shown(url)} could not be opened or migrated "
            f"({str(error.orig or error).strip().splitlines()[0]}); check "
            "CXR_SERVE__PREDICTION_LOG_URL and that the database server is running"
        ) from error
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    return engine


def now() -> datetime:
    return datetime.now(UTC)


def log_prediction(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Insert one answered prediction and commit."""
    with engine.begin() as connection:
        connection.execute(predictions.insert().values(created_at=now(), **row))


class PredictionWriter:
    """Group commit of answered predictions: :meth:`log` returns once its row is
    committed; rows that arrive while a commit runs go into the next transaction, written
    by one background thread (one insert of many rows instead of one commit per request).
    A group that fails is written row by row, so only a bad row's request fails."""

    MAX_GROUP = 256
    _COLUMNS = [column.name for column in predictions.columns if column.name != "id"]

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], concurrent.futures.Future]]
        self._queue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="prediction-log", daemon=True).start()

    async def log(self, row: dict[str, Any]) -> None:
        """Queue one answered prediction and wait until it is committed."""
        if unknown := set(row) - set(self._COLUMNS):
            raise ValueError(f"not columns of the prediction log: {sorted(unknown)}")
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        full = {name: row.get(name) for name in self._COLUMNS} | {"created_at": now()}
        self._queue.put((full, done))
        await asyncio.wrap_future(done)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as connection:
            connection.execute(predictions.insert(), rows)

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < self.MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._insert([row for row, _ in group])
            except Exception:  # noqa: BLE001  (each row again, alone, below)
                for row, done in group:
                    try:
                        self._insert([row])
                    except Exception as error:  # noqa: BLE001  (the request answers 500)
                        done.set_exception(error)
                    else:
                        done.set_result(None)
            else:
                for _, done in group:
                    done.set_result(None)


def log_rejection(
    engine: sa.Engine, request_id: str, status_code: int, reason: str, size: int
) -> None:
    """Insert one rejected request and commit."""
    with engine.begin() as connection:
        connection.execute(
            rejections.insert().values(
                created_at=now(),
                request_id=request_id,
                status_code=status_code,
                reason=reason[:500],
                bytes=size,
            )  # fmt: skip
        )


def _utc(moment: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC, as the log stores it)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_predictions(
    engine: sa.Engine, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Predictions logged in [start, end) as a DataFrame; ``created_at`` is in UTC
    (timezone-aware) whatever the backend (SQLite keeps naive UTC text, PostgreSQL a
    ``timestamptz`` returned in the session's time zone)."""
    query = sa.select(predictions).order_by(predictions.c.id)
    if start is not None:
        query = query.where(predictions.c.created_at >= _utc(start))
    if end is not None:
        query = query.where(predictions.c.created_at < _utc(end))
    with engine.connect() as connection:
        frame = pd.read_sql(query, connection)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def count_rows(engine: sa.Engine) -> dict[str, int]:
    """How many predictions and rejections the log holds."""
    with engine.connect() as connection:
        return {
            table.name: int(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            )
            for table in (predictions, rejections)
        }
