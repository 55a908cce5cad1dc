"""Group commit of the prediction log: every awaited row is committed, a bad row fails
only its own request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from cxr.core.image_stats import STAT_COLUMNS
from cxr.serve.prediction_log import PredictionWriter, count_rows, create_log_engine


def _row(request_id: str) -> dict:
    return {
        "request_id": request_id, "model_tag": "cxr-classifier:test",
        "covid_probability": 0.25, "label": "Normal", "threshold": 0.5, "latency_ms": 3.0,
        "width": 299, "height": 299, "mode": "L", "bytes": 1000,
        **dict.fromkeys(STAT_COLUMNS, 1.0),
    }  # fmt: skip


def test_concurrent_rows_are_committed_when_their_call_returns(tmp_path: Path) -> None:
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    writer = PredictionWriter(engine)

    async def main() -> list[int]:
        seen = []

        async def one(i: int) -> None:
            await writer.log(_row(f"r{i}"))
            seen.append(count_rows(engine)["predictions"])  # its own row is in already

        await asyncio.gather(*(one(i) for i in range(64)))
        return seen

    seen = asyncio.run(main())
    assert count_rows(engine)["predictions"] == 64
    assert min(seen) >= 1 and max(seen) == 64
    dicom = {**_row("dicom"), "modality": "DX", "bits_stored": 12}  # optional columns too
    asyncio.run(writer.log(dicom))
    with engine.connect() as connection:
        found = connection.execute(sa.text("select modality, bits_stored from predictions "
                                           "where request_id = 'dicom'")).one()  # fmt: skip
    assert tuple(found) == ("DX", 12)


def test_a_bad_row_fails_its_own_request_only(tmp_path: Path) -> None:
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    writer = PredictionWriter(engine)
    asyncio.run(writer.log(_row("taken")))

    async def main() -> list[BaseException | None]:
        rows = [_row(f"ok{i}") for i in range(8)] + [_row("taken")]  # a duplicate id
        return await asyncio.gather(*(writer.log(row) for row in rows), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[:8] == [None] * 8
    with pytest.raises(sa.exc.IntegrityError):
        raise outcomes[8]
    assert count_rows(engine)["predictions"] == 9
