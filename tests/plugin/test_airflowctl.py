"""``airflowctl``, Airflow's own CLI for its REST API, against a real api-server with the plugin.

``airflowctl`` (PyPI ``apache-airflow-ctl``) runs from a venv of its own
(:mod:`tests.support.airflowctl`): it needs no Airflow, only the api-server's URL and a token
from Airflow's own ``POST /auth/token``. What it creates is the sidecar's.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.plugin.conftest import PluginStack, plugin_stack
from tests.support.airflowctl import airflowctl
from tests.support.dags import metadata_query
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow, pytest.mark.e2e, pytest.mark.timeout(600)]

DAG = "sidecar_e2e_three"


@pytest.fixture(scope="module")
def stack(airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginStack]:
    with plugin_stack(
        airflow_db, tmp_path_factory.mktemp("airflowctl"), all_admins=False, with_off=False
    ) as s:
        yield s


def _sql(stack: PluginStack, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return metadata_query(stack.db.env, sql, params)


def test_airflowctl_creates_a_sidecar_backfill(stack: PluginStack, tmp_path: Path) -> None:
    """Airflow's own CLI for its API (``airflowctl``, in a venv of its own) reaches the sidecar.

    Its bounds keep the offset they are written in, as Airflow's own path would: the run on
    the lower bound is named ``backfill__2025-07-01T05:30:00+05:30``.
    """
    ctl = str(airflowctl())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)  # airflowctl keeps the API's URL there
    token = stack.token("admin")

    def run(*args: str) -> str:
        done = subprocess.run([ctl, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    run("auth", "login", "--api-url", stack.on_url, "--api-token", token, "--skip-keyring")
    out = run(
        "backfill",
        "create",
        "--api-token",
        token,
        "--dag-id",
        DAG,
        "--from-date",
        "2025-07-01T05:30:00+05:30",
        "--to-date",
        "2025-07-03T00:00:00+00:00",
        "--max-active-runs",
        "3",
        "--reprocess-behavior",
        "none",
        "--output",
        "json",
    )
    created = json.loads(out)
    created = created[0] if isinstance(created, list) else created
    backfill_id = int(created["id"])
    rows = _sql(
        stack,
        "SELECT s.planned_count, s.phase, b.triggering_user_name FROM backfill b"
        " JOIN airflow_sidecar.sidecar_backfill s ON s.backfill_id = b.id WHERE b.id = %s",
        backfill_id,
    )
    assert rows == [(3, "materialized", "admin")]
    runs = _sql(stack, "SELECT run_id FROM dag_run WHERE backfill_id = %s ORDER BY logical_date", backfill_id)
    assert [r[0] for r in runs] == [
        "backfill__2025-07-01T05:30:00+05:30",
        "backfill__2025-07-02T00:00:00+00:00",
        "backfill__2025-07-03T00:00:00+00:00",
    ]
    # airflowctl 0.1.5's ``backfill cancel`` sends POST where Airflow's route is PUT (405 from
    # Airflow itself, plugin or not): cancel through Airflow's API as the UI does.
    cancelled = httpx.put(
        f"{stack.on_url}/api/v2/backfills/{backfill_id}/cancel",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert _sql(
        stack, "SELECT phase FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s", backfill_id
    ) == [("cancelled",)]
