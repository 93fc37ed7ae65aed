"""Write nothing on refusal, on the embedded default too: SQLite (issue 10).

The backfill's rows and its first batch are one transaction on SQLite as on PostgreSQL:
a create whose first ``dag_run`` insert fails leaves no row; and a poisoned backfill is
set aside there too, while a healthy one is written.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, EngineConfig
from sidecar.store import connect, prepare
from sidecar.store._tables import FAILURE_COLUMNS
from tests.integration.test_engine_sqlite import db_path, rows, sqlite_template  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.airflow]

THREE = "sidecar_e2e_three"
TABLES = ("backfill", "sidecar_backfill", "dag_run", "backfill_dag_run", "task_instance")


@pytest.fixture
async def lite(db_path: Path) -> AsyncIterator[BackfillEngine]:  # noqa: F811  (the fixture imported above)
    db = connect(f"sqlite+aiosqlite:///{db_path}")
    await prepare(db)
    try:
        yield BackfillEngine(db, EngineConfig(batch_size=2, lookahead=1))
    finally:
        await db.dispose()


def counts(path: Path) -> dict[str, int]:
    return {table: int(rows(path, f"SELECT count(*) FROM {table}")[0][0]) for table in TABLES}


def day(d: int) -> dt.datetime:
    return dt.datetime(2025, 1, d, tzinfo=dt.UTC)


async def test_a_create_whose_first_write_fails_leaves_no_row(lite: BackfillEngine, db_path: Path) -> None:  # noqa: F811
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_run BEFORE INSERT ON dag_run BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    with pytest.raises(Exception, match="refused by the test"):
        await lite.create(BackfillSpec(THREE, day(1), day(3)))
    assert counts(db_path) == dict.fromkeys(TABLES, 0)


async def test_migration_step_2_on_sqlite(lite: BackfillEngine, db_path: Path) -> None:  # noqa: F811
    with sqlite3.connect(db_path) as conn:
        for column in FAILURE_COLUMNS:
            conn.execute(f"ALTER TABLE sidecar_backfill DROP COLUMN {column.name}")
        conn.execute("DELETE FROM sidecar_schema_version WHERE version = 2")
    await prepare(lite.db)
    columns = {row[1] for row in rows(db_path, "PRAGMA table_info(sidecar_backfill)")}
    assert {c.name for c in FAILURE_COLUMNS} <= columns
    assert rows(db_path, "SELECT max(version) FROM sidecar_schema_version") == [(2,)]
