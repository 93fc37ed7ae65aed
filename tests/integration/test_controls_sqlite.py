"""Concurrent backfills on the embedded default, SQLite: overlapping creates race, exactly one wins.

A deferred SQLite transaction reads before it takes the write lock, so two creates could
both see room; the creation's no-op write takes the lock first (``_creation._lock_dag``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from sidecar import errors
from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, Controls
from tests.integration.test_engine_sqlite import (  # noqa: F401  (fixtures; ``engine`` on SQLite here)
    db_path,
    engine,
    rows,
    sqlite_template,
)

pytestmark = [pytest.mark.airflow]

THREE = "sidecar_e2e_three"


def spec(first: int, last: int) -> BackfillSpec:
    return BackfillSpec(
        THREE,
        dt.datetime(2025, 1, first, tzinfo=dt.UTC),
        dt.datetime(2025, 1, last, tzinfo=dt.UTC),
        max_active_runs=1,
        controls=Controls(concurrent=True),
    )


async def test_overlapping_creates_race_and_exactly_one_wins(engine: BackfillEngine, db_path: Path) -> None:  # noqa: F811
    results = await asyncio.gather(
        *(engine.create(spec(1 + i, 10 + i)) for i in range(4)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, BackfillView)]
    lost = [r for r in results if not isinstance(r, BackfillView)]
    assert len(won) == 1, results
    assert all(isinstance(r, errors.BackfillRangeOverlaps) for r in lost), lost
    assert rows(db_path, "SELECT count(*) FROM backfill") == [(1,)]
    # A range beside it is accepted.
    beside = await engine.create(spec(20, 21))
    assert isinstance(beside, BackfillView)
    assert rows(db_path, "SELECT count(*) FROM backfill WHERE completed_at IS NULL") == [(2,)]
