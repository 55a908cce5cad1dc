"""The prediction log's costs on SQLite (WAL) and on PostgreSQL, in one run.

    .venv/bin/python benchmarks/prediction_log_backends.py            # 500 rows a backend

PostgreSQL is a throwaway cluster started like the tests' (tests/pg.py: Debian's server
binaries, a temporary folder, loopback, default durability). For each backend: bringing
an empty database to the newest migration, a start on a database already there (what
every service worker and monitoring run pays), and one committed row from a single
writer. Prints every figure in ms and the ratio PostgreSQL / SQLite.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cxr.core.image_stats import STAT_COLUMNS  # noqa: E402
from cxr.serve.prediction_log import create_log_engine, log_prediction  # noqa: E402
from tests.pg import start_postgres, stop_postgres  # noqa: E402


def _row() -> dict:
    return {
        "request_id": uuid.uuid4().hex, "model_tag": "bench:1", "covid_probability": 0.7,
        "label": "COVID", "threshold": 0.5, "latency_ms": 12.0, "width": 299, "height": 299,
        "mode": "L", "bytes": 1000, **dict.fromkeys(STAT_COLUMNS, 1.0),
    }  # fmt: skip


def measure(url: str, rows: int) -> dict[str, float]:
    """Milliseconds: empty -> head, a start at head (median of 5), one committed row."""
    started = time.perf_counter()
    engine = create_log_engine(url)
    first = time.perf_counter() - started
    again = []
    for _ in range(5):
        started = time.perf_counter()
        create_log_engine(url).dispose()
        again.append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(rows):
        log_prediction(engine, _row())
    per_row = (time.perf_counter() - started) / rows
    engine.dispose()
    return {"empty_to_head": first * 1e3, "at_head": statistics.median(again) * 1e3,
            "row": per_row * 1e3}  # fmt: skip


def main(rows: int = 500) -> None:
    server = start_postgres()
    try:
        with tempfile.TemporaryDirectory() as folder:
            figures = {
                "sqlite": measure(f"sqlite:///{Path(folder) / 'predictions.db'}", rows),
                "postgresql": measure(server.create_database(), rows),
            }
    finally:
        stop_postgres(server)
    for name, values in figures.items():
        print(name, {key: round(value, 2) for key, value in values.items()})
    ratios = {key: figures["postgresql"][key] / figures["sqlite"][key] for key in figures["sqlite"]}
    print("postgresql / sqlite", {key: round(value, 1) for key, value in ratios.items()})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
