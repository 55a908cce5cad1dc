"""Durable log of served predictions (and rejected requests) for drift monitoring.

SQLite in WAL mode by default; any SQLAlchemy URL (e.g. PostgreSQL) by configuration.
Each answered request is one committed row before the answer is returned.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from cxr.core.image_stats import STAT_COLUMNS

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


def create_log_engine(url: str) -> sa.Engine:
    """Engine for the log; creates the tables (and the SQLite folder) when missing."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def now() -> datetime:
    return datetime.now(UTC)


def log_prediction(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Insert one answered prediction and commit."""
    with engine.begin() as connection:
        connection.execute(predictions.insert().values(created_at=now(), **row))


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


def read_predictions(
    engine: sa.Engine, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Predictions logged in [start, end) as a DataFrame."""
    query = sa.select(predictions).order_by(predictions.c.id)
    if start is not None:
        query = query.where(predictions.c.created_at >= start)
    if end is not None:
        query = query.where(predictions.c.created_at < end)
    with engine.connect() as connection:
        return pd.read_sql(query, connection)


def count_rows(engine: sa.Engine) -> dict[str, int]:
    """How many predictions and rejections the log holds."""
    with engine.connect() as connection:
        return {
            table.name: int(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            )
            for table in (predictions, rejections)
        }
