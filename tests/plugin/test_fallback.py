"""``SIDECAR_PLUGIN_FALLBACK=airflow``: with the sidecar unreachable, Airflow's own routes answer.

No sidecar runs at all here: the plugin's target is a closed port. The request is still
authenticated and authorised by Airflow, then replayed, body and all, to Airflow's own route
(its slow path, every run written in the request), which is what an operator asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.plugin.conftest import DELEGATE, api_environ, sidecar_jwt, url_of
from tests.support.dags import metadata_query
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import AirflowProcess
from tests.support.stack import start_api_server

pytestmark = [pytest.mark.postgres, pytest.mark.airflow, pytest.mark.e2e, pytest.mark.timeout(300)]

DAG = "sidecar_e2e_three"


@pytest.fixture(scope="module")
def api_server(
    airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AirflowProcess, str]]:
    tmp = tmp_path_factory.mktemp("fallback")
    env = api_environ(
        airflow_db.env,
        tmp,
        all_admins=False,
        SIDECAR_TARGET=f"127.0.0.1:{free_port()}",  # nothing listens there
        SIDECAR_TOKEN=sidecar_jwt(DELEGATE, "delegate"),
        SIDECAR_PLUGIN_FALLBACK="airflow",
        SIDECAR_PLUGIN_TIMEOUT="5",
    )
    process = start_api_server(env, tmp / "logs", timeout=180)
    try:
        yield process, url_of(env)
    finally:
        process.stop()


def test_airflow_answers_while_the_sidecar_is_down(
    api_server: tuple[AirflowProcess, str], airflow_db: AirflowDatabase
) -> None:
    process, url = api_server
    token = httpx.post(
        f"{url}/auth/token", json={"username": "admin", "password": "admin-password"}, timeout=30
    ).json()["access_token"]
    body = {"dag_id": DAG, "from_date": "2025-06-01T00:00:00Z", "to_date": "2025-06-05T00:00:00Z"}
    assert httpx.post(f"{url}/api/v2/backfills", json=body, timeout=60).status_code == 401
    created = httpx.post(
        f"{url}/api/v2/backfills", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert created.status_code == 200, created.text
    backfill_id = created.json()["id"]
    # Airflow's own path: all five runs written in the request, by Airflow, for its user.
    rows = metadata_query(
        airflow_db.env,
        "SELECT count(*), min(b.triggering_user_name) FROM backfill_dag_run r"
        " JOIN backfill b ON b.id = r.backfill_id WHERE b.id = %s",
        (backfill_id,),
    )
    assert rows == [(5, "admin")]
    paused = httpx.put(
        f"{url}/api/v2/backfills/{backfill_id}/pause",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert paused.status_code == 200 and paused.json()["is_paused"] is True
    assert "the sidecar is unreachable: Airflow answers POST /api/v2/backfills" in process.log_tail(200_000)
