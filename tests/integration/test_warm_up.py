"""``serve``'s warm-up rehearses a create and leaves nothing behind (issue 14, ADR 0009).

The rehearsal runs the create path on a pool connection inside one transaction rolled back
at the end: afterwards no row of any table it writes exists, no metric counted it, and a
real create of the same DAG and range works as on a cold engine.
"""

from __future__ import annotations

import datetime as dt

import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, Mode
from sidecar.observability import RUNS_WRITTEN
from sidecar.store import ensure_runs_index

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

_WRITTEN = (
    "backfill",
    "dag_run",
    "task_instance",
    "backfill_dag_run",
    "airflow_sidecar.sidecar_backfill",
    "airflow_sidecar.sidecar_notify",
    "airflow_sidecar.sidecar_event",
)


def _rows(sql: psycopg2.extensions.cursor) -> dict[str, int]:
    counts = {}
    for table in _WRITTEN:
        sql.execute(f"SELECT count(*) FROM {table}")
        row = sql.fetchone()
        assert row is not None
        counts[table] = int(row[0])
    return counts


async def test_the_warm_up_rehearses_a_create_and_leaves_nothing(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    before, written = _rows(sql), RUNS_WRITTEN._value.get()
    assert await engine.warm_up()
    assert _rows(sql) == before
    assert RUNS_WRITTEN._value.get() == written
    sql.execute("SELECT dag_id FROM serialized_dag ORDER BY last_updated DESC LIMIT 1")
    row = sql.fetchone()
    assert row is not None
    now = dt.datetime.now(dt.UTC)
    spec = BackfillSpec(
        dag_id=row[0],
        from_date=now - dt.timedelta(days=2),
        to_date=now,
        max_active_runs=1,
        mode=Mode.WINDOWED,
    )
    view = await engine.create(spec)  # what the warm-up rehearsed, for real
    assert isinstance(view, BackfillView)
    assert _rows(sql)["backfill"] == before["backfill"] + 1


async def test_the_runs_index_is_built_concurrently_and_rebuilt_when_invalid(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    """The sidecar's index on dag_run is valid after start; an interrupted build's leftover is rebuilt."""
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('sidecar_dag_run_backfill_state')"
    sql.execute(valid)
    assert sql.fetchall() == [(True,)]
    # What a CREATE INDEX CONCURRENTLY cut short leaves behind: an index marked invalid.
    sql.execute(
        "UPDATE pg_index SET indisvalid = false"
        " WHERE indexrelid = to_regclass('sidecar_dag_run_backfill_state')"
    )
    assert await ensure_runs_index(engine.db)
    sql.execute(valid)
    assert sql.fetchall() == [(True,)]
