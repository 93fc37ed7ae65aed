"""Crash safety against the database: connections cut mid-batch, and PostgreSQL restarting.

The sidecar reaches PostgreSQL through a loopback TCP proxy that drops every connection
on command, each time while a batch holds uncommitted writes. A second test runs the
sidecar on a private PostgreSQL server (never the shared one) and restarts that server
mid-batch, once as a crash (``immediate``) and once cleanly (``fast``). Either way the
sidecar keeps ticking, and in the end exactly the planned runs exist, nothing twice.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from tests.resilience.helpers import (
    FROM_20K,
    ONE_TASK_DAG,
    TO_20K,
    assert_backfill_intact,
    create_in_background,
    create_request,
    phase_of,
    runs_of,
    start_serve,
    wait_for_runs,
)
from tests.resilience.private_pg import private_postgres_with, unavailable_reason
from tests.support.fixtures import AirflowDatabase, running_on_ci
from tests.support.postgres import PG_HOST, PG_PORT, PG_USER
from tests.support.processes import AirflowProcess
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]


def _finish(db: AirflowDatabase | str, sidecar: AirflowProcess, planned: int) -> dict[str, int]:
    wait_until(
        lambda: phase_of(db) == "materialized",
        180,
        0.2,
        lambda: f"the sidecar to finish the backfill\n{sidecar.log_tail()}",
    )
    return assert_backfill_intact(db, ONE_TASK_DAG, planned)


@pytest.mark.timeout(240)
def test_connections_cut_mid_batch_lose_and_duplicate_nothing(
    module_db: AirflowDatabase, tmp_path: Path
) -> None:
    rng = random.Random(7)
    errors: list[str] = []
    cuts: list[int] = []
    with tcp_proxy(PG_HOST, PG_PORT) as proxy:
        url = f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{proxy.port}/{module_db.name}"
        sidecar, target = start_serve(url, tmp_path / "sidecar.log")
        try:
            create_in_background(
                target, create_request(ONE_TASK_DAG, FROM_20K, TO_20K, mode=pb.MODE_EAGER), errors
            )
            seen = 0
            for _ in range(5):
                wait_for_runs(
                    module_db, seen + rng.randint(1, 3_000), errors, sidecar.running, sidecar.log_tail
                )
                cuts.append(proxy.drop_all())
                seen = runs_of(module_db)
            figures = _finish(module_db, sidecar, 20_000)
            assert sidecar.running(), sidecar.log_tail()
        finally:
            sidecar.stop()
    print(
        f"connection cuts: {len(cuts)} faults, {sum(cuts)} connections dropped; create errors {errors}; {figures}"
    )
    assert all(cuts)


@pytest.mark.timeout(240)
def test_postgresql_restarts_mid_batch_lose_and_duplicate_nothing(
    module_db: AirflowDatabase, tmp_path: Path
) -> None:
    reason = unavailable_reason()
    if reason:
        if running_on_ci():
            pytest.fail(f"cannot start a private PostgreSQL: {reason} (CI=true: refusing to skip)")
        pytest.skip(f"cannot start a private PostgreSQL (the shared one is never restarted): {reason}")
    planned = 10_000
    errors: list[str] = []
    with private_postgres_with(module_db.name) as server:
        dsn = server.url(module_db.name, "psycopg2").replace("postgresql+psycopg2://", "postgresql://")
        sidecar, target = start_serve(server.url(module_db.name), tmp_path / "sidecar.log")
        try:
            create_in_background(
                target,
                create_request(ONE_TASK_DAG, FROM_20K, "1997-05-19T00:00:00Z", mode=pb.MODE_EAGER),
                errors,
            )
            wait_for_runs(dsn, 1_000, errors, sidecar.running, sidecar.log_tail)
            server.restart("immediate")
            wait_for_runs(dsn, 4_000, errors, sidecar.running, sidecar.log_tail)
            server.restart("fast")
            figures = _finish(dsn, sidecar, planned)
            assert sidecar.running(), sidecar.log_tail()
        finally:
            sidecar.stop()
    print(f"PostgreSQL restarts: 2 (immediate, fast); create errors {errors}; {figures}")
