"""The lanes' batches of a plan (``sidecar.engine._lanes._batches``), for every count the record may hold.

A batch marked ``exhausted`` ends the writing: the create answers after it without another
batch. So only the plan's real last batch may be marked, whatever the stored count says
(exact, missing, too low or too high), and every slot after the cursor comes exactly once,
in order, each batch starting where the one before it ended.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.engine._lanes import _batches
from sidecar.engine._materialize import plan_of
from sidecar.engine._plans import cursor_of
from sidecar.store import Phase
from sidecar.store._backfill_reads import PlanRecord
from sidecar.vocabulary import Mode, ReprocessBehavior

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
HOURLY = {
    "__type": "airflow.timetables.interval.CronDataIntervalTimetable",
    "__var": {"expression": "0 * * * *", "timezone": "UTC"},
}


def record(slots: int, run_backwards: bool) -> PlanRecord:
    """A stored plan of ``slots`` hourly slots, nothing written yet, its count exact."""
    return PlanRecord(
        backfill_id=1,
        dag_id="d",
        phase=Phase.MATERIALIZING,
        mode=Mode.EAGER,
        run_backwards=run_backwards,
        cutoff=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        timetable=HOURLY,
        from_date=START,
        to_date=START + dt.timedelta(hours=slots - 1),
        planned_count=slots,
        written_count=0,
        skipped_count=0,
        cursor=None,
        max_active_runs=10,
        dag_run_conf=None,
        dag_run_conf_given=False,
        triggering_user_name=None,
        reprocess_behavior=ReprocessBehavior.NONE,
    )


@settings(max_examples=300, deadline=None)
@given(
    slots=st.integers(1, 60),
    written=st.integers(0, 60),
    count_error=st.one_of(st.none(), st.integers(-5, 5)),
    max_runs=st.integers(1, 25),
    run_backwards=st.booleans(),
)
def test_only_the_plans_last_batch_ends_the_writing(
    slots: int, written: int, count_error: int | None, max_runs: int, run_backwards: bool
) -> None:
    whole = record(slots, run_backwards)
    every = list(plan_of(whole).runs(after=None))
    assert len(every) == slots
    written = min(written, slots)
    cursor = cursor_of(every[written - 1]) if written else None
    count = None if count_error is None else max(0, slots + count_error)
    stored = dataclasses.replace(whole, planned_count=count, written_count=written, cursor=cursor)

    batches = list(_batches(stored, max_runs))

    got = [run for batch in batches for run in batch.runs]
    assert [r.run_id for r in got] == [r.run_id for r in every[written:]]  # each once, in order
    after = cursor
    for batch in batches:
        assert batch.after == after and batch.runs
        after = cursor_of(batch.runs[-1])
    assert all(not batch.exhausted for batch in batches[:-1])  # never before the end
    if count == slots and batches:  # an exact count always finishes the writing in lanes
        assert batches[-1].exhausted
