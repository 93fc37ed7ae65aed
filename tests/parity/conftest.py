"""Two identical Airflow 3.3.2 metadata databases, one for Airflow (the oracle) and one for the sidecar.

Both are clones of one base database: the migrated schema plus ``tests/parity/dags``
serialized once (so ``dag_version`` ids, ``serialized_dag`` rows and ``log_template`` ids
are identical), plus a versioned bundle emulated by SQL (:data:`VERSIONED_BUNDLE_SQL`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.parity.cases import EVOLVING_EXISTING, EVOLVING_OWN_RANGE, EVOLVING_RANGE, SCRIPT
from tests.parity.harness import Outcome, finish_oracle, run_script, start_oracle
from tests.support.airflow import airflow_environ
from tests.support.dags import serialize_dags
from tests.support.postgres import drop_database, fresh_airflow_database, pg_connect, psycopg2_url
from tests.support.templates import TemplateInfo, serialized_dags_template

PARITY_DAGS = Path(__file__).resolve().parent / "dags"

#: Airflow 3.3.2 records a versioned bundle's version on ``dag.bundle_version`` (copied
#: into new runs by ``_create_orm_dagrun``) and ``dag_version.bundle_version`` when the
#: dag-processor parses a versioned bundle (e.g. git). The default dags-folder bundle is
#: unversioned, so the tests emulate a versioned one by setting both columns by SQL:
#: ``parity_versioned`` then behaves as a DAG of a git bundle at that commit, and
#: ``parity_unversioned`` as one that sets ``disable_bundle_versioning``.
BUNDLE_VERSION = "5f2c1e9a0b7d4c3e8f6a1b2c3d4e5f60718293a4"
VERSIONED_BUNDLE_SQL = (
    "UPDATE dag SET bundle_version = %(v)s WHERE dag_id IN ('parity_versioned', 'parity_unversioned')",
    "UPDATE dag_version SET bundle_version = %(v)s"
    " WHERE dag_id IN ('parity_versioned', 'parity_unversioned')",
)


def _evolve_dag(base: str, home: Path) -> None:
    """Give ``parity_evolving`` finished runs of version 1 (in two ranges), then serialize its version 2.

    Done once in the base database, so both clones hold the same two versions and the
    same runs of the first (made by Airflow's own ``create_dagrun``).
    """
    env = airflow_environ(home, psycopg2_url(base), PARITY_DAGS)
    finish_oracle(
        start_oracle(
            env,
            [
                {
                    "op": "arrange",
                    "dag_id": "parity_evolving",
                    "from_date": first.isoformat(),
                    "to_date": last.isoformat(),
                    "index": index,
                    "state": state,
                }
                for first, last in (EVOLVING_RANGE, EVOLVING_OWN_RANGE)
                for index, state in EVOLVING_EXISTING
            ],
        )
    )
    # The template was serialized moments ago on a fresh machine: without this, Airflow
    # skips rewriting a DAG serialized less than 30 s ago and no version 2 appears.
    env["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"] = "0"
    serialize_dags({**env, "PARITY_DAG_VERSION": "2"}, PARITY_DAGS)
    conn = pg_connect(base)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM dag_version WHERE dag_id = 'parity_evolving'")
            versions = cur.fetchone()[0]
    finally:
        conn.close()
    if versions != 2:
        raise RuntimeError(f"parity_evolving has {versions} versions after reserializing, expected 2")


@dataclass(frozen=True)
class ParityDatabases:
    """The oracle's database and the sidecar's, identical before the tests write to them."""

    airflow_name: str
    airflow_env: dict[str, str]
    sidecar_name: str
    sidecar_env: dict[str, str]
    sidecar_url: str
    dag_ids: tuple[str, ...]


@pytest.fixture(scope="session")
def parity_dbs(
    airflow_template: TemplateInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ParityDatabases]:
    """Clone the base twice: ``*_af`` for Airflow's ``_create_backfill``, ``*_sc`` for the sidecar."""
    template, dag_ids = serialized_dags_template(
        PARITY_DAGS,
        base=airflow_template.name,
        unpause=True,
        work_dir=tmp_path_factory.mktemp("parity-template"),
    )
    pid = os.getpid()
    base, airflow_name, sidecar_name = (f"sidecar_parity_{kind}_{pid}" for kind in ("base", "af", "sc"))
    fresh_airflow_database(base, template=template)
    try:
        # First: reserializing would reset the emulated bundle version below.
        _evolve_dag(base, tmp_path_factory.mktemp("parity-evolve"))
        conn = pg_connect(base)
        try:
            with conn.cursor() as cur:
                for statement in VERSIONED_BUNDLE_SQL:
                    cur.execute(statement, {"v": BUNDLE_VERSION})
        finally:
            conn.close()
        _, airflow_url = fresh_airflow_database(airflow_name, template=base)
        sidecar_url, sidecar_pg_url = fresh_airflow_database(sidecar_name, template=base)
    finally:
        drop_database(base)
    home = tmp_path_factory.mktemp("parity-home")
    try:
        yield ParityDatabases(
            airflow_name=airflow_name,
            airflow_env=airflow_environ(home / "af", airflow_url, PARITY_DAGS),
            sidecar_name=sidecar_name,
            sidecar_env=airflow_environ(home / "sc", sidecar_pg_url, PARITY_DAGS),
            sidecar_url=sidecar_url,
            dag_ids=tuple(dag_ids),
        )
    finally:
        if os.environ.get("SIDECAR_KEEP_TEST_DB") != "1":
            drop_database(airflow_name)
            drop_database(sidecar_name)


@dataclass(frozen=True)
class ParityRun:
    """Both databases after the whole script ran, and each side's answers."""

    dbs: ParityDatabases
    airflow: Outcome
    sidecar: Outcome


@pytest.fixture(scope="session")
def parity_run(parity_dbs: ParityDatabases) -> ParityRun:
    """Run :data:`tests.parity.cases.SCRIPT` through Airflow 3.3.2 and through the sidecar, once."""
    airflow, sidecar = run_script(
        SCRIPT,
        airflow_env=parity_dbs.airflow_env,
        sidecar_env=parity_dbs.sidecar_env,
        sidecar_url=parity_dbs.sidecar_url,
        sidecar_db=parity_dbs.sidecar_name,
    )
    return ParityRun(parity_dbs, airflow, sidecar)
