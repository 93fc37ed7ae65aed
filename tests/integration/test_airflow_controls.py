"""Airflow's own controls drive a sidecar backfill: its cancel, pause and unpause, never undone.

A real Airflow 3.3.2 api-server (its own ``/api/v2``, without the sidecar's plugin:
``SIDECAR_TARGET`` is not set) on the test database does the cancel, pause and unpause, as
its UI's buttons do; the sidecar's engine runs in the test and its ticks are driven one by
one, so that what each tick does is deterministic (no scheduler is needed: the test plays
the runs' progress in SQL).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, DryRun, Mode, State
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.stack import start_api_server

UTC = dt.UTC
THREE = "sidecar_e2e_three"
PASSWORD = "admin-password"


def day(d: int) -> dt.datetime:
    return dt.datetime(2025, 1, d, tzinfo=UTC)


def spec(**kw: Any) -> BackfillSpec:
    values: dict[str, Any] = {"dag_id": THREE, "from_date": day(1), "to_date": day(10), "max_active_runs": 2}
    values.update(kw)
    return BackfillSpec(**values)


class AirflowApi:
    """Airflow's own REST API, as its UI calls it, logged in as an admin of its simple auth manager."""

    def __init__(self, url: str) -> None:
        answer = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30)
        answer.raise_for_status()
        self.client = httpx.Client(
            base_url=f"{url}/api/v2",
            headers={"Authorization": f"Bearer {answer.json()['access_token']}"},
            timeout=30,
        )

    def put(self, backfill_id: int, action: str) -> dict[str, Any]:
        """``PUT /api/v2/backfills/{id}/{action}`` (cancel, pause, unpause); its answer's body."""
        answer = self.client.put(f"/backfills/{backfill_id}/{action}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


@pytest.fixture(scope="module")
def airflow(airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowApi]:
    """Airflow's api-server on the module's database, without the sidecar's plugin enabled."""
    tmp = tmp_path_factory.mktemp("airflow-controls")
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    env = {
        **airflow_db.env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    assert "SIDECAR_TARGET" not in env
    server = start_api_server(env, Path(tmp) / "logs", timeout=180)
    try:
        api = AirflowApi(f"http://127.0.0.1:{port}")
        with api.client:
            yield api
    finally:
        server.stop()


async def _windowed(engine: BackfillEngine) -> BackfillView:
    """A windowed backfill of days 1..10, its first window (three runs) written."""
    view = await engine.create(spec())
    assert not isinstance(view, DryRun)
    assert view.progress.written == 3  # max_active_runs 2 + lookahead 1
    return view


def _runs(sql: psycopg2.extensions.cursor, backfill_id: int) -> list[tuple[int, str, bool]]:
    """(day, state, has an end date) of a backfill's runs, by logical date."""
    sql.execute(
        "SELECT logical_date, state, end_date IS NOT NULL FROM dag_run WHERE backfill_id = %s ORDER BY 1",
        (backfill_id,),
    )
    return [(r[0].day, r[1], r[2]) for r in sql.fetchall()]


async def test_airflows_cancel_is_final_and_ends_queued_runs_like_the_sidecars(
    airflow: AirflowApi, engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await _windowed(engine)
    sql.execute("UPDATE dag_run SET state = 'running' WHERE logical_date = %s", (day(1),))

    cancelled = airflow.put(view.id, "cancel")
    assert cancelled["is_paused"] is True and cancelled["completed_at"] is not None
    sql.execute("SELECT completed_at FROM backfill WHERE id = %s", (view.id,))
    (completed_at,) = sql.fetchone()
    # What Airflow's cancel leaves: queued runs failed without an end date, their tasks without a state.
    assert _runs(sql, view.id) == [(1, "running", False), (2, "failed", False), (3, "failed", False)]

    # The runs Airflow did not fail finish; a tick would top the window up, were it not cancelled.
    sql.execute("UPDATE dag_run SET state = 'success', end_date = now() WHERE logical_date = %s", (day(1),))
    for _ in range(3):
        result = await engine.tick()
        assert result.runs_written == 0
        assert view.id not in result.materializing  # Airflow's timer is no longer held off it

    assert _runs(sql, view.id) == [(1, "success", True), (2, "failed", True), (3, "failed", True)]
    sql.execute(
        "SELECT DISTINCT ti.state FROM task_instance ti JOIN dag_run r"
        " ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id WHERE r.backfill_id = %s AND r.logical_date > %s",
        (view.id, day(1)),
    )
    assert sql.fetchall() == [("skipped",)]
    sql.execute("SELECT completed_at, is_paused FROM backfill WHERE id = %s", (view.id,))
    assert sql.fetchone() == (completed_at, False)  # Airflow's completion kept; unpaused, as the sidecar's
    sql.execute("SELECT phase FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s", (view.id,))
    assert sql.fetchone() == ("cancelled",)
    got = await engine.get(view.id)
    assert got.state is State.CANCELLED and not got.is_paused
    assert got.progress.written == 3

    # The DAG is free: Airflow's own create is accepted, and, once that one is cancelled, the sidecar's.
    answer = airflow.client.post(
        "/backfills",
        json={
            "dag_id": THREE,
            "from_date": day(11).isoformat(),
            "to_date": day(12).isoformat(),
            "max_active_runs": 1,
            "reprocess_behavior": "none",
        },
    )
    assert answer.status_code == 200, answer.text
    theirs = answer.json()["id"]
    airflow.put(theirs, "cancel")
    await engine.tick()  # Airflow's own backfill has no sidecar row: the tick leaves it alone
    mine = await engine.create(spec(from_date=day(13), to_date=day(14)))
    assert not isinstance(mine, DryRun)
    assert mine.state is State.ACTIVE and mine.progress.written == 2


async def test_airflows_pause_stops_the_window_and_its_unpause_resumes_it(
    airflow: AirflowApi, engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await _windowed(engine)
    assert airflow.put(view.id, "pause")["is_paused"] is True
    assert (await engine.get(view.id)).state is State.PAUSED

    for _ in range(3):  # every written run finishes, and still no new run is written
        sql.execute(
            "UPDATE dag_run SET state = 'success', end_date = now() WHERE backfill_id = %s", (view.id,)
        )
        result = await engine.tick()
        assert result.runs_written == 0
        assert result.materializing == [view.id]  # runs remain: Airflow's timer stays held off it
    assert len(_runs(sql, view.id)) == 3
    sql.execute("SELECT completed_at FROM backfill WHERE id = %s", (view.id,))
    assert sql.fetchone() == (None,)

    assert airflow.put(view.id, "unpause")["is_paused"] is False
    assert (await engine.tick()).runs_written == 3  # the next window, on the next tick
    assert [r[0] for r in _runs(sql, view.id)] == [1, 2, 3, 4, 5, 6]
    assert (await engine.get(view.id)).state is State.ACTIVE
    await engine.cancel(view.id)


async def test_an_interrupted_eager_backfill_waits_while_paused(
    airflow: AirflowApi, engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await _windowed(engine)
    # As if an eager create had stopped after its first batches (the process died): the tick finishes it.
    sql.execute(
        "UPDATE airflow_sidecar.sidecar_backfill SET mode = %s WHERE backfill_id = %s",
        (Mode.EAGER.value, view.id),
    )
    airflow.put(view.id, "pause")
    assert (await engine.tick()).runs_written == 0
    assert len(_runs(sql, view.id)) == 3

    airflow.put(view.id, "unpause")
    assert (await engine.tick()).runs_written == 7
    assert len(_runs(sql, view.id)) == 10
    await engine.cancel(view.id)


async def test_a_pause_stops_a_top_up_at_its_next_batch(
    airflow: AirflowApi, engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    """A pause that lands after the tick listed the backfill still stops its writing, at the batch."""
    from sidecar.engine._materialize import materialize

    view = await _windowed(engine)
    airflow.put(view.id, "pause")
    parts = engine._parts
    made = await materialize(
        parts.tx, parts.catalog, view.id, runs_wanted=None, batch_size=3, now=parts.clock(), unpaused=True
    )
    assert made == 0
    assert len(_runs(sql, view.id)) == 3
    await engine.cancel(view.id)
