"""The backfill controls on a real Airflow 3.3.2 schema on PostgreSQL (docs/controls.md).

Several backfills of one DAG (concurrent, never overlapping, race-free), the failed-runs
limit (a pause with its reason, forgiven by an unpause, Airflow's unpause included), and
refusals of out-of-range controls that write nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg2.extensions
import pytest

from sidecar import errors
from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, Controls, DryRun, State
from sidecar.store import prepare
from sidecar.store._database import _MIGRATIONS
from sidecar.store._tables import CONTROL_COLUMNS

#: The migration step that adds the controls' columns.
STEP = 6

UTC = dt.UTC
THREE = "sidecar_e2e_three"

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]


def day(d: int, month: int = 1) -> dt.datetime:
    return dt.datetime(2025, month, d, tzinfo=UTC)


def spec(first: int, last: int, **controls: object) -> BackfillSpec:
    return BackfillSpec(
        dag_id=THREE,
        from_date=day(first),
        to_date=day(last),
        max_active_runs=2,
        controls=Controls(**controls),  # type: ignore[arg-type]
    )


async def created(engine: BackfillEngine, s: BackfillSpec) -> BackfillView:
    view = await engine.create(s)
    assert not isinstance(view, DryRun)
    return view


async def test_concurrent_backfills_of_a_dag_never_overlap(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    first = await created(engine, spec(1, 10, concurrent=True, priority=5))
    second = await created(engine, spec(11, 20, concurrent=True, dag_max_active_runs=3))
    assert (second.controls.concurrent, second.controls.dag_max_active_runs) == (True, 3)
    assert (await engine.get(first.id)).controls.priority == 5

    with pytest.raises(errors.BackfillRangeOverlaps) as refused:
        await engine.create(spec(8, 12, concurrent=True))
    assert refused.value.field == "backfill.from_date"
    assert str(refused.value) == (
        f"the range overlaps backfill {first.id} of DAG {THREE} (open, 2025-01-01T00:00:00+00:00 to "
        "2025-01-10T00:00:00+00:00) from 2025-01-08T00:00:00+00:00 to 2025-01-10T00:00:00+00:00; "
        "concurrent backfills of a DAG must not overlap"
    )
    # Without --concurrent, Airflow's own rule: one open backfill per DAG.
    with pytest.raises(errors.BackfillAlreadyRunning):
        await engine.create(spec(21, 25))
    # Ranges are inclusive: sharing one day is an overlap.
    with pytest.raises(errors.BackfillRangeOverlaps, match=f"backfill {second.id} .* from 2025-01-20"):
        await engine.create(spec(20, 25, concurrent=True))
    # A cancelled backfill's range is free again.
    await engine.cancel(first.id)
    third = await created(engine, spec(5, 6, concurrent=True))
    sql.execute("SELECT count(*) FROM backfill WHERE completed_at IS NULL AND dag_id = %s", (THREE,))
    assert sql.fetchone() == (2,)
    assert third.id > second.id


async def test_two_concurrent_creates_of_overlapping_ranges_exactly_one_wins(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    for attempt in range(3):
        sql.execute("DELETE FROM task_instance; DELETE FROM backfill_dag_run; DELETE FROM dag_run")
        sql.execute("DELETE FROM airflow_sidecar.sidecar_backfill; DELETE FROM backfill")
        results = await asyncio.gather(
            engine.create(spec(1, 10, concurrent=True)),
            engine.create(spec(5 + attempt, 15, concurrent=True)),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, BackfillView)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], errors.BackfillRangeOverlaps), lost[0]
        sql.execute("SELECT count(*) FROM backfill")
        assert sql.fetchone() == (1,)


async def fail_runs(sql: psycopg2.extensions.cursor, backfill_id: int, count: int) -> None:
    """Mark ``count`` more of a backfill's queued runs failed, as the scheduler would."""
    sql.execute(
        "UPDATE dag_run SET state = 'failed', end_date = now() WHERE id IN (SELECT id FROM dag_run"
        " WHERE backfill_id = %s AND state = 'queued' ORDER BY logical_date LIMIT %s)",
        (backfill_id, count),
    )
    assert sql.rowcount == count


async def test_max_failed_runs_pauses_with_its_reason_and_an_unpause_forgives(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await created(engine, spec(1, 10, max_failed_runs=2))
    assert view.controls.max_failed_runs == 2 and view.pause_reason is None
    await fail_runs(sql, view.id, 1)
    await engine.tick()
    assert (await engine.get(view.id)).state is State.ACTIVE
    await fail_runs(sql, view.id, 1)
    await engine.tick()
    paused = await engine.get(view.id)
    assert paused.state is State.PAUSED and paused.is_paused
    assert paused.pause_reason == "2 failed runs reached max_failed_runs 2"
    sql.execute("SELECT is_paused FROM backfill WHERE id = %s", (view.id,))
    assert sql.fetchone() == (True,)  # Airflow's scheduler starts none of its queued runs
    await engine.notifier.record()  # the event: failed_threshold, not a user's pause
    sql.execute("SELECT kind FROM airflow_sidecar.sidecar_event WHERE backfill_id = %s", (view.id,))
    assert sql.fetchall() == [("failed_threshold",)]
    written = paused.progress.written
    await engine.tick()
    assert (await engine.get(view.id)).progress.written == written  # paused: no new runs

    # The user's unpause forgives the failed runs so far: two more are needed to pause it again.
    await engine.set_paused(view.id, False)
    resumed = await engine.get(view.id)
    assert resumed.state is State.ACTIVE and resumed.pause_reason is None
    await engine.tick()
    assert (await engine.get(view.id)).state is State.ACTIVE
    await fail_runs(sql, view.id, 2)
    await engine.tick()
    assert (await engine.get(view.id)).pause_reason == "2 failed runs reached max_failed_runs 2"

    # Airflow's own unpause (its UI, its API) wins too: the tick forgives instead of pausing again.
    sql.execute("UPDATE backfill SET is_paused = false WHERE id = %s", (view.id,))
    await engine.tick()
    after = await engine.get(view.id)
    assert after.state is State.ACTIVE and after.pause_reason is None
    sql.execute(
        "SELECT failed_runs_forgiven FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s", (view.id,)
    )
    assert sql.fetchone() == (4,)


async def test_a_user_pause_shows_no_reason_and_a_cancelled_backfill_none(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await created(engine, spec(1, 10, max_failed_runs=1))
    await engine.set_paused(view.id, True)
    await fail_runs(sql, view.id, 1)
    await engine.tick()  # paused already: nothing to stop
    assert (await engine.get(view.id)).pause_reason is None
    await engine.set_paused(view.id, False)  # no reason to forgive: the failure still counts
    await engine.tick()
    assert (await engine.get(view.id)).pause_reason == "1 failed run reached max_failed_runs 1"
    await engine.cancel(view.id)
    cancelled = await engine.get(view.id)
    assert cancelled.state is State.CANCELLED and cancelled.pause_reason is None


@pytest.mark.parametrize(
    ("name", "value"), [("max_failed_runs", 0), ("priority", 1001), ("dag_max_active_runs", 0)]
)
async def test_out_of_range_controls_are_refused_naming_the_field_and_write_nothing(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor, name: str, value: int
) -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        await engine.create(spec(1, 3, **{name: value}))
    assert refused.value.field == f"backfill.{name}"
    sql.execute("SELECT count(*) FROM backfill")
    assert sql.fetchone() == (0,)


async def test_migration_step_6_adds_the_control_columns_and_old_rows_read_the_defaults(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await created(engine, spec(1, 3))
    for column in CONTROL_COLUMNS:  # a database a release before this one migrated
        sql.execute(f"ALTER TABLE airflow_sidecar.sidecar_backfill DROP COLUMN {column.name}")
    sql.execute(f"DELETE FROM airflow_sidecar.sidecar_schema_version WHERE version >= {STEP}")
    await prepare(engine.db)
    sql.execute("SELECT max(version) FROM airflow_sidecar.sidecar_schema_version")
    assert sql.fetchone() == (len(_MIGRATIONS),)
    again = await engine.get(view.id)
    assert again.controls == Controls() and again.pause_reason is None
    await engine.tick()  # an old row (NULL controls) ticks as before
    await prepare(engine.db)  # idempotent
