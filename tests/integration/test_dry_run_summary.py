"""The dry run's summary and the estimates, against a real Airflow 3.3.2 schema on PostgreSQL.

The summary counts the whole plan, whatever the page listed; it must agree with the listing of
every slot, for every reprocess behaviour and every state an existing run can be in. Estimates
come from the DAG's finished runs, then from the backfill's own.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, Disposition, DryRun, Mode, ReprocessBehavior, State
from tests.integration.test_engine import THREE, day, spec

EXISTING = {2: "failed", 3: "success", 5: "running", 6: "queued", 8: "failed", 9: "success"}


def _existing_runs(sql: psycopg2.extensions.cursor, durations: dict[int, float] | None = None) -> None:
    for d, state in EXISTING.items():
        seconds = (durations or {}).get(d)
        end = day(d) + dt.timedelta(seconds=seconds) if seconds is not None else None
        sql.execute(
            "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
            " span_status, start_date, end_date)"
            " VALUES (%s, %s, %s, %s, %s, 'manual', 0, 'not_started', %s, %s)",
            (THREE, f"manual__{d}", day(d), day(d), state, day(d) if end else None, end),
        )


@pytest.mark.parametrize("behaviour", list(ReprocessBehavior))
async def test_summary_counts_the_whole_plan_as_the_listing_does(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor, behaviour: ReprocessBehavior
) -> None:
    _existing_runs(sql)
    request = spec(reprocess_behavior=behaviour)
    listing = await engine.create(request, validate_only=True)
    paged = await engine.create(request, validate_only=True, dry_run_limit=2)
    alone = await engine.create(request, validate_only=True, dry_run_limit=0)
    assert isinstance(listing, DryRun) and isinstance(paged, DryRun) and isinstance(alone, DryRun)
    assert len(listing.runs) == 10 and len(paged.runs) == 2 and alone.runs == []
    by = Counter(s.disposition for s in listing.runs)
    for result in (listing, paged, alone):
        summary = result.summary
        assert summary is not None and summary.exact
        assert (summary.create, summary.reprocess, summary.already_exists, summary.in_flight) == (
            by[Disposition.CREATE],
            by[Disposition.REPROCESS],
            by[Disposition.ALREADY_EXISTS],
            by[Disposition.IN_FLIGHT],
        )
        assert result.backfill.progress.planned == 10
        assert result.backfill.progress.skipped == summary.skipped
        to_run = [s for s in listing.runs if s.disposition in (Disposition.CREATE, Disposition.REPROCESS)]
        assert summary.first_run == to_run[0] and summary.last_run == to_run[-1]
    assert by[Disposition.IN_FLIGHT] == 2  # running and queued are never touched
    sql.execute("SELECT (SELECT count(*) FROM backfill), (SELECT count(*) FROM dag_run)")
    assert sql.fetchone() == (0, len(EXISTING))


async def test_dry_run_estimate_from_the_dags_history(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    none = await engine.create(spec(), validate_only=True)
    assert isinstance(none, DryRun) and none.backfill.estimate is None  # no finished run: no guess
    _existing_runs(sql, durations={2: 60.0, 3: 120.0, 8: 180.0, 9: 240.0})
    result = await engine.create(spec(max_active_runs=2), validate_only=True)
    assert isinstance(result, DryRun) and result.summary is not None
    estimate = result.backfill.estimate
    assert estimate is not None and estimate.basis == "history" and estimate.sample_size == 4
    assert estimate.run_p50 == dt.timedelta(seconds=150)
    assert estimate.run_p90 == dt.timedelta(seconds=222)
    assert estimate.runs_remaining == result.summary.to_run == 4  # days 1, 4, 7 and 10 are created
    assert estimate.remaining_p50 == dt.timedelta(seconds=4 * 150 / 2)


async def test_a_backfills_estimate_follows_its_own_finished_runs(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    for d in (20, 21, 22):  # history outside the backfill's range: runs of an hour
        sql.execute(
            "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
            " span_status, start_date, end_date) VALUES (%s, %s, %s, %s, 'success', 'manual', 0,"
            " 'not_started', %s, %s)",
            (THREE, f"manual__{d}", day(d), day(d), day(d), day(d) + dt.timedelta(hours=1)),
        )
    created = await engine.create(spec(max_active_runs=2, mode=Mode.EAGER))
    assert not isinstance(created, DryRun)
    first = await engine.get(created.id, with_estimate=True)
    assert first.estimate is not None and first.estimate.basis == "history"
    assert first.estimate.run_p50 == dt.timedelta(hours=1)
    assert (await engine.get(created.id)).estimate is None  # only when asked: one more read
    sql.execute(
        "UPDATE dag_run SET state = 'success', start_date = logical_date,"
        " end_date = logical_date + interval '10 seconds' WHERE backfill_id = %s",
        (created.id,),
    )
    mine = await engine.get(created.id, with_estimate=True)
    assert mine.estimate is not None and mine.estimate.basis == "backfill"
    assert mine.estimate.run_p50 == dt.timedelta(seconds=10)
    assert mine.estimate.runs_remaining == 0
    await engine.tick()  # completes it
    done = await engine.get(created.id, with_estimate=True)
    assert done.state is State.COMPLETED and done.estimate is None
