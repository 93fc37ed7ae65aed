"""Write nothing on refusal, on the embedded default too: SQLite (issue 10).

The backfill's rows and its first batch are one transaction on SQLite as on PostgreSQL:
a create whose first ``dag_run`` insert fails leaves no row; a backfill whose runs cannot
be written is set aside there too, while another one is written to the end; migration
step 2 adds its reason's columns to an existing table.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView
from sidecar.store import prepare
from sidecar.store._database import _MIGRATIONS
from sidecar.store._tables import FAILURE_COLUMNS
from tests.integration.test_engine_sqlite import (  # noqa: F401  (fixtures; ``engine`` on SQLite here)
    db_path,
    engine,
    rows,
    sqlite_template,
)

pytestmark = [pytest.mark.airflow]

THREE = "sidecar_e2e_three"
TABLES = ("backfill", "sidecar_backfill", "dag_run", "backfill_dag_run", "task_instance")


def counts(path: Path) -> dict[str, int]:
    return {table: int(rows(path, f"SELECT count(*) FROM {table}")[0][0]) for table in TABLES}


def day(d: int) -> dt.datetime:
    return dt.datetime(2025, 1, d, tzinfo=dt.UTC)


async def test_a_create_whose_first_write_fails_leaves_no_row(engine: BackfillEngine, db_path: Path) -> None:  # noqa: F811
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_run BEFORE INSERT ON dag_run BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    with pytest.raises(Exception, match="refused by the test"):
        await engine.create(BackfillSpec(THREE, day(1), day(3)))
    assert counts(db_path) == dict.fromkeys(TABLES, 0)


async def test_migration_step_2_on_sqlite(engine: BackfillEngine, db_path: Path) -> None:  # noqa: F811
    with sqlite3.connect(db_path) as conn:
        for column in FAILURE_COLUMNS:
            conn.execute(f"ALTER TABLE sidecar_backfill DROP COLUMN {column.name}")
        conn.execute("DELETE FROM sidecar_schema_version WHERE version >= 2")  # and the steps after it
    await prepare(engine.db)
    columns = {row[1] for row in rows(db_path, "PRAGMA table_info(sidecar_backfill)")}
    assert {c.name for c in FAILURE_COLUMNS} <= columns
    assert rows(db_path, "SELECT max(version) FROM sidecar_schema_version") == [
        (len(_MIGRATIONS),)
    ]  # every step since


async def test_a_failing_backfill_is_set_aside_and_the_other_is_written(
    engine: BackfillEngine,  # noqa: F811
    db_path: Path,  # noqa: F811
) -> None:
    poisoned = await engine.create(BackfillSpec(THREE, day(1), day(9), max_active_runs=1))
    healthy = await engine.create(BackfillSpec("sidecar_it_params", day(1), day(9), max_active_runs=1))
    with sqlite3.connect(db_path) as conn:  # from now on, no run of the first DAG can be written
        conn.execute(
            f"CREATE TRIGGER refuse_run BEFORE INSERT ON dag_run WHEN NEW.dag_id = '{THREE}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    for _ in range(8):
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE dag_run SET state = 'success' WHERE state = 'queued'")
        await engine.tick()
    assert isinstance(poisoned, BackfillView) and isinstance(healthy, BackfillView)
    aside = await engine.get(poisoned.id)
    assert aside.write_failure is not None and aside.write_failure.set_aside
    assert aside.write_failure.reason == "database_error"
    done = await engine.get(healthy.id)
    assert done.progress.written == done.progress.planned == 9 and done.write_failure is None
