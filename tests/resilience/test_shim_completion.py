"""The shim holds back Airflow's completion timer: the real ``SchedulerJobRunner`` on a real database.

A windowed sidecar backfill whose written runs have all finished looks complete to Airflow
3.3.2's ``_mark_backfills_complete`` while the sidecar still has runs to write. The probe
(``shim_completion_probe.py``, a subprocess with Airflow configured for the test database)
drives ``SidecarSchedulerJobRunner`` with a real ``TickClient`` to a real sidecar, next to
backfills Airflow itself created, and the test checks which ones the timer closed:
none before any Tick, Airflow's own (old enough) ones once a Tick answered, none again while
the sidecar is unreachable and the last answer is stale, and never the sidecar's.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.resilience.helpers import ONE_TASK_DAG, create_request, query, start_serve
from tests.support.airflow import run_probe
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

PROBE = Path(__file__).resolve().parent / "shim_completion_probe.py"


@pytest.mark.timeout(300)
def test_airflows_timer_never_closes_a_backfill_the_sidecar_is_writing(
    module_db: AirflowDatabase, tmp_path: Path
) -> None:
    # Only the probe ticks (the sidecar's own timer is an hour).
    sidecar, target = start_serve(module_db.asyncpg_url, tmp_path / "sidecar.log", tick_interval=3600)
    try:
        with grpc.insecure_channel(target) as channel:
            backfill_pb2_grpc.BackfillServiceStub(channel).CreateBackfill(
                create_request(
                    ONE_TASK_DAG,
                    "2024-01-01T00:00:00Z",
                    "2024-01-30T00:00:00Z",
                    mode=pb.MODE_WINDOWED,
                    max_active_runs=1,
                ),
                timeout=30,
            )
        ((sidecar_id,),) = query(module_db, "SELECT id FROM backfill WHERE dag_id = %s", ONE_TASK_DAG)
        # Old enough that only the Tick's materializing list can hold it back.
        query(
            module_db,
            "UPDATE backfill SET created_at = created_at - interval '1 hour' WHERE id = %s",
            sidecar_id,
        )
        options = {"target": target, "dead_target": f"127.0.0.1:{free_port()}", "fresh_for": 2.0}
        results = run_probe(PROBE, options, module_db.env)
        log = sidecar.log_tail(100_000)
    finally:
        sidecar.stop()

    # Airflow alone would close the sidecar's backfill between two windows.
    assert results["airflow_alone"] == sorted([ONE_TASK_DAG, "sidecar_it_interval"])
    assert results["never_ticked"] == []  # no Tick answered yet: every backfill waits
    assert results["materializing"] == [sidecar_id]
    assert results["fresh"] == ["sidecar_it_interval"]  # Airflow's own completes; the sidecar's waits
    assert results["stale"] == ["sidecar_it_interval"]  # sidecar unreachable, answer stale: all wait
    # The sidecar answers again: Airflow's older backfill completes, a brand-new one (it could be
    # one the sidecar created after listing its own) waits, and the sidecar's never completes early.
    assert results["fresh_again"] == ["sidecar_e2e_three", "sidecar_it_interval"]
    assert results["young_open"] is True
    assert query(module_db, "SELECT completed_at FROM backfill WHERE id = %s", sidecar_id) == [(None,)]
    assert "completed early" not in log
