"""The script of backfill requests both Airflow and the sidecar run, in this order.

Row cases cover every DAG of the corpus forwards and backwards (DST changes inside the
ranges), and existing runs in each state under each reprocess behaviour. Validation
cases make each of Airflow's checks fail (and some fail two checks at once, to pin the
order). Ranges of one DAG never overlap unless a case is about existing runs.
"""

from __future__ import annotations

import datetime as dt

from tests.parity.harness import Request, at
from tests.parity.versions import partitions, present

#: ``parity_evolving``: runs of version 1 made before the DAG changed (tests/parity/conftest.py).
EVOLVING_RANGE = (at(2024, 4, 1), at(2024, 4, 6))
EVOLVING_EXISTING = ((1, "success"), (2, "failed"), (3, "running"), (4, "success"))
#: ``parity_evolving`` again: runs of version 1 reprocessed on their own version.
EVOLVING_OWN_RANGE = (at(2024, 5, 1), at(2024, 5, 6))


def local(year: int, month: int, day: int, hour: int, minute: int, offset_minutes: int) -> dt.datetime:
    """A bound as a caller writes it in a UTC offset (Airflow keeps the offset: run ids show it)."""
    return dt.datetime(
        year, month, day, hour, minute, tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes))
    )


#: Existing runs in every state, by index in the range (the range holds six runs).
EVERY_STATE = ((1, "success"), (2, "failed"), (3, "queued"), (4, "running"))

ROW_CASES: tuple[Request, ...] = present(
    (
        Request("chain_forwards", "parity_chain", at(2024, 1, 1), at(2024, 1, 5)),
        Request("chain_backwards", "parity_chain", at(2024, 2, 1), at(2024, 2, 4), reverse=True),
        Request("fan_spring_dst", "parity_fan", at(2024, 3, 28), at(2024, 4, 2)),
        Request("fan_autumn_dst_backwards", "parity_fan", at(2024, 10, 25), at(2024, 10, 29), reverse=True),
        Request("mapped_forwards", "parity_mapped", at(2024, 3, 8), at(2024, 3, 13)),
        Request("mapped_backwards", "parity_mapped", at(2024, 11, 1), at(2024, 11, 5), reverse=True),
        Request("dop_forwards", "parity_dop", at(2024, 1, 1), at(2024, 1, 3), reprocess="completed"),
        Request("multi_cron_forwards", "parity_multi_cron", at(2024, 1, 1), at(2024, 1, 3)),
        Request("multi_cron_backwards", "parity_multi_cron", at(2024, 2, 1), at(2024, 2, 2), reverse=True),
        Request("delta_trigger_forwards", "parity_delta_trigger", at(2024, 1, 1), at(2024, 1, 3)),
        Request(
            "delta_trigger_backwards", "parity_delta_trigger", at(2024, 2, 1), at(2024, 2, 3), reverse=True
        ),
        Request("params_with_conf", "parity_params", at(2024, 1, 1), at(2024, 1, 4), conf={"batch": 7}),
        Request("params_no_conf_backwards", "parity_params", at(2024, 2, 1), at(2024, 2, 3), reverse=True),
        Request("monthly_leap_february", "parity_monthly", at(2023, 12, 15), at(2024, 4, 15)),
        Request("monthly_backwards", "parity_monthly", at(2024, 9, 1), at(2024, 12, 31), reverse=True),
        Request("pinned_version_no_reprocess", "parity_pinned_version", at(2024, 2, 1), at(2024, 2, 3)),
        Request("leap_day", "parity_leap_day", at(2020, 1, 1), at(2025, 1, 1)),
        Request("leap_day_backwards", "parity_leap_day", at(2016, 1, 1), at(2019, 12, 31), reverse=True),
        Request("versioned_bundle", "parity_versioned", at(2024, 1, 1), at(2024, 1, 1, 5)),
        # Bounds with a UTC offset, the first (or, backwards, last) run exactly on the lower
        # bound: its run id keeps the caller's offset (backfill__2024-08-01T05:30:00+05:30).
        Request(
            "offset_on_tick", "parity_chain", local(2024, 8, 1, 5, 30, 330), local(2024, 8, 3, 21, 0, -180)
        ),
        Request(
            "offset_on_tick_backwards",
            "parity_chain",
            local(2024, 8, 9, 19, 15, -285),
            at(2024, 8, 12),
            reverse=True,
        ),
        Request(
            "offset_delta_trigger", "parity_delta_trigger", local(2024, 3, 10, 0, 0, 840), at(2024, 3, 12)
        ),
        Request("offset_monthly", "parity_monthly", local(2024, 5, 1, 9, 45, 585), at(2024, 7, 15)),
        Request("unversioned_bundle", "parity_unversioned", at(2024, 1, 1), at(2024, 1, 1, 5)),
        # The runs of an earlier backfill are still queued: in flight, whatever the behaviour.
        Request(
            "earlier_backfill_in_flight",
            "parity_chain",
            at(2024, 1, 1),
            at(2024, 1, 5),
            reprocess="completed",
        ),
        # Existing runs in each state, under each reprocess behaviour.
        Request("existing_none", "parity_chain", at(2024, 5, 1), at(2024, 5, 6), arrange=EVERY_STATE),
        Request(
            "existing_failed",
            "parity_chain",
            at(2024, 6, 1),
            at(2024, 6, 6),
            reprocess="failed",
            arrange=EVERY_STATE,
        ),
        Request(
            "existing_completed_backwards_conf",
            "parity_chain",
            at(2024, 7, 1),
            at(2024, 7, 6),
            reverse=True,
            reprocess="completed",
            conf={"from": "backfill"},
            arrange=EVERY_STATE,
        ),
        Request(
            "existing_mapped_completed",
            "parity_mapped",
            at(2024, 1, 8),
            at(2024, 1, 16),
            reprocess="completed",
            arrange=((0, "success"), (2, "failed"), (4, "running")),
        ),
        Request(
            "existing_params_failed_conf",
            "parity_params",
            at(2024, 3, 1),
            at(2024, 3, 6),
            reprocess="failed",
            conf={"batch": 9, "label": "again"},
            arrange=((1, "failed"), (2, "success")),
        ),
        Request(
            "existing_versioned_completed",
            "parity_versioned",
            at(2024, 2, 1),
            at(2024, 2, 1, 5),
            reprocess="completed",
            arrange=((0, "success"), (1, "failed")),
        ),
        Request(
            "existing_unversioned_completed",
            "parity_unversioned",
            at(2024, 2, 1),
            at(2024, 2, 1, 5),
            reprocess="completed",
            arrange=((0, "failed"),),
        ),
        Request(
            "evolved_dag_completed",
            "parity_evolving",
            *EVOLVING_RANGE,
            reprocess="completed",
            conf={"rerun": 2},
        ),
        # run_on_latest_version=False: the reprocessed runs stay on version 1 (its tasks).
        Request(
            "evolved_dag_own_version",
            "parity_evolving",
            *EVOLVING_OWN_RANGE,
            reprocess="completed",
            run_on_latest_version=False,
        ),
        # The DAG sets rerun_with_latest_version=False: the same, resolved as Airflow's API does.
        Request(
            "pinned_version_reprocess",
            "parity_pinned_version",
            at(2024, 1, 1),
            at(2024, 1, 3),
            reprocess="failed",
            arrange=((1, "failed"),),
        ),
        Request(
            "existing_dop_failed",
            "parity_dop",
            at(2024, 2, 1),
            at(2024, 2, 2),
            reprocess="failed",
            arrange=((0, "success"), (1, "failed"), (2, "queued")),
        ),
    )
)

FUTURE = at(2100, 1, 1)

#: An hour boundary shortly before the script runs: the partitions of a range that ends
#: in the future are all planned (Airflow does not cut partitions off at now).
_HOUR = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)

#: Partitioned DAGs (3.3's rules): keys in the timetable's zone, partition dates, runs
#: found by partition date, reprocessing as a new run beside the old one.
_PARTITION_CASES: tuple[Request, ...] = (
    Request("partitions_forwards", "parity_partitioned", at(2024, 1, 1), at(2024, 1, 5)),
    Request("partitions_backwards", "parity_partitioned", at(2024, 2, 1), at(2024, 2, 4), reverse=True),
    Request(
        "partitions_earlier_in_flight",
        "parity_partitioned",
        at(2024, 1, 1),
        at(2024, 1, 5),
        reprocess="completed",
    ),
    Request(
        "partitions_existing_none", "parity_partitioned", at(2024, 5, 1), at(2024, 5, 6), arrange=EVERY_STATE
    ),
    Request(
        "partitions_existing_failed",
        "parity_partitioned",
        at(2024, 6, 1),
        at(2024, 6, 6),
        reprocess="failed",
        arrange=EVERY_STATE,
    ),
    Request(
        "partitions_existing_completed_backwards_conf",
        "parity_partitioned",
        at(2024, 7, 1),
        at(2024, 7, 6),
        reverse=True,
        reprocess="completed",
        conf={"from": "backfill"},
        arrange=EVERY_STATE,
    ),
    # Reprocessing again: the partition now has two runs; Airflow looks at the started one.
    Request(
        "partitions_reprocessed_twice",
        "parity_partitioned",
        at(2024, 6, 1),
        at(2024, 6, 6),
        reprocess="failed",
    ),
    Request("partitions_autumn_dst", "parity_partitioned_hourly", at(2024, 10, 27), at(2024, 10, 27, 4)),
    Request(
        "partitions_spring_dst_backwards",
        "parity_partitioned_hourly",
        at(2024, 3, 31),
        at(2024, 3, 31, 4),
        reverse=True,
    ),
    Request(
        "partitions_into_the_future",
        "parity_partitioned_hourly",
        _HOUR - dt.timedelta(hours=2),
        _HOUR + dt.timedelta(hours=3),
    ),
)

#: Each of Airflow's checks failing; the expected sidecar error class goes with the name.
VALIDATION_CASES: tuple[Request, ...] = present(
    (
        Request("dag_not_found", "parity_missing", at(2024, 1, 1), at(2024, 1, 2)),
        Request("backfill_not_allowed", "parity_no_backfill", at(2024, 1, 1), at(2024, 1, 2)),
        Request("non_periodic", "parity_manual", at(2024, 1, 1), at(2024, 1, 2)),
        # Order: not allowed is checked before the range.
        Request("not_allowed_before_range", "parity_no_backfill", at(2024, 1, 3), at(2024, 1, 2)),
        Request("non_periodic_before_range", "parity_manual", at(2024, 1, 3), at(2024, 1, 2)),
        Request("from_after_to", "parity_chain", at(2024, 9, 3), at(2024, 9, 2)),
        # Airflow's message shows the bounds as the caller wrote them.
        Request(
            "from_after_to_offset",
            "parity_chain",
            local(2024, 9, 3, 0, 0, 330),
            local(2024, 9, 2, 0, 0, -570),
        ),
        Request("future_only", "parity_chain", FUTURE, at(2100, 1, 5)),
        Request(
            "dop_backwards", "parity_dop", at(2024, 3, 1), at(2024, 3, 2), reverse=True, reprocess="failed"
        ),
        Request("dop_reprocess_none", "parity_dop", at(2024, 3, 1), at(2024, 3, 2)),
        Request("dop_reprocess_null", "parity_dop", at(2024, 3, 1), at(2024, 3, 2), reprocess=None),
        # Order: the range before depends_on_past, depends_on_past direction before reprocess.
        Request("range_before_dop", "parity_dop", at(2024, 3, 3), at(2024, 3, 2), reverse=True),
        Request("dop_direction_before_reprocess", "parity_dop", at(2024, 3, 1), at(2024, 3, 2), reverse=True),
        Request("conf_below_minimum", "parity_params", at(2024, 9, 1), at(2024, 9, 2), conf={"batch": 0}),
        Request("conf_wrong_type", "parity_params", at(2024, 9, 1), at(2024, 9, 2), conf={"label": 3}),
        Request("empty_range", "parity_chain", at(2024, 9, 1, 1), at(2024, 9, 1, 5)),
        # Another active backfill: the first one stays active for the next three requests.
        Request("active_first", "parity_fan", at(2024, 9, 1), at(2024, 9, 2), complete=False),
        Request("active_second", "parity_fan", at(2024, 9, 5), at(2024, 9, 6), complete=False),
        # Order: another backfill is checked before the range and the params.
        Request("active_before_range", "parity_fan", at(2024, 9, 7), at(2024, 9, 6), complete=False),
        Request("active_before_future", "parity_fan", FUTURE, FUTURE),
    )
)

#: Where Airflow 3.3.2 is wrong and the sidecar refuses (docs/adr/0003-parity.md).
BETTER_CASES: tuple[Request, ...] = present(
    (
        Request(
            "max_active_runs_zero",
            "parity_chain",
            at(2024, 9, 10),
            at(2024, 9, 11),
            max_active_runs=0,
            discard=True,
        ),
        Request(
            "max_active_runs_negative",
            "parity_chain",
            at(2024, 9, 10),
            at(2024, 9, 11),
            max_active_runs=-1,
            discard=True,
        ),
    )
)

#: DAG features the sidecar refuses (FAILED_PRECONDITION naming them); Airflow accepts them.
REFUSED_CASES: tuple[Request, ...] = present(
    (Request("deadline_alerts", "parity_deadline", at(2024, 1, 1), at(2024, 1, 3), discard=True),)
)

ROW_CASES += partitions(_PARTITION_CASES, written=True)
#: On a minor whose partitioned backfills the sidecar does not reproduce (3.2): refused by name.
REFUSED_CASES += partitions(
    (Request("partitioned", "parity_partitioned", at(2024, 1, 1), at(2024, 1, 3), discard=True),),
    written=False,
)

SCRIPT: tuple[Request, ...] = ROW_CASES + VALIDATION_CASES + BETTER_CASES + REFUSED_CASES
