"""The ``airflow_db`` fixture really yields Airflow 3.3.2's schema with our DAGs in it.

Every integration and end-to-end test builds on this fixture, so its guarantees are
checked here once: the backfill tables exist, the schema is at the installed Airflow's
alembic head (not a stale template), and the test DAG is serialized and unpaused.
"""

from __future__ import annotations

import subprocess
import sys

import psycopg2
import pytest

from tests.support.airflow import process_environ
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

_HEAD_SCRIPT = (
    "from airflow.utils.db import _get_script_object\nprint(_get_script_object().get_current_head())\n"
)


def _query(db: AirflowDatabase, sql: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _alembic_head(db: AirflowDatabase) -> str:
    """Airflow's own idea of its newest migration, asked in a subprocess (importing Airflow
    here would write an ``airflow.cfg`` into the developer's home)."""
    result = subprocess.run(
        [sys.executable, "-c", _HEAD_SCRIPT],
        env=process_environ(db.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_backfill_tables_exist(airflow_db: AirflowDatabase) -> None:
    rows = _query(
        airflow_db,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_name IN "
        "('dag_run', 'task_instance', 'backfill', 'backfill_dag_run', 'serialized_dag', 'dag_version')",
    )
    assert sorted(str(row[0]) for row in rows) == [
        "backfill",
        "backfill_dag_run",
        "dag_run",
        "dag_version",
        "serialized_dag",
        "task_instance",
    ]


def test_schema_is_at_airflow_head(airflow_db: AirflowDatabase) -> None:
    (revision,) = _query(airflow_db, "SELECT version_num FROM alembic_version")
    assert revision[0] == _alembic_head(airflow_db)


def test_test_dag_is_serialized_and_unpaused(airflow_db: AirflowDatabase) -> None:
    assert "sidecar_e2e_three" in airflow_db.dag_ids
    rows = _query(
        airflow_db,
        "SELECT d.is_paused, d.bundle_name, v.version_number, s.dag_hash "
        "FROM dag d JOIN dag_version v ON v.dag_id = d.dag_id "
        "JOIN serialized_dag s ON s.dag_version_id = v.id "
        "WHERE d.dag_id = 'sidecar_e2e_three'",
    )
    assert len(rows) == 1
    is_paused, bundle_name, version_number, dag_hash = rows[0]
    assert is_paused is False
    assert bundle_name == "dags-folder"
    assert version_number == 1
    assert isinstance(dag_hash, str) and len(dag_hash) == 32


def test_database_is_empty_of_runs(airflow_db: AirflowDatabase) -> None:
    """A clone starts clean: no leftovers from the template or another module."""
    assert _query(airflow_db, "SELECT count(*) FROM dag_run") == [(0,)]
    assert _query(airflow_db, "SELECT count(*) FROM backfill") == [(0,)]
