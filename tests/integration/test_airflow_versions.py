"""The Airflow version is read from the schema at start-up: its row contract, and a newer one refused.

Runs against the Airflow under test (``SIDECAR_TEST_AIRFLOW``; each minor's environment runs
this module, see ``scripts/airflow_matrix.sh``), so the contract of every supported minor is
checked against that minor's real schema: the columns it says exist are exactly the
sidecar's declared columns the live tables have.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2.extensions
import pytest
import sqlalchemy as sa

from airflow_shim.launcher import SHIM_MINORS
from sidecar.errors import SchemaMismatch
from sidecar.store import SUPPORTED_AIRFLOW_REVISIONS, connect, prepare
from sidecar.store._tables import AIRFLOW_TABLES
from sidecar.store._versions import SUPPORTED_RANGE, contract_for_revision
from tests.support.airflow import AIRFLOW_VERSION
from tests.support.postgres import drop_database, fresh_airflow_database, pg_connect
from tests.support.templates import TemplateInfo

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

AIRFLOW_MINOR = ".".join(AIRFLOW_VERSION.split(".")[:2])

NEWER_REVISION = "0badc0ffee00"  # what a future Airflow's `airflow db migrate` would leave


@pytest.fixture
def schema_db(airflow_template: TemplateInfo) -> Iterator[tuple[str, str]]:
    """A fresh clone of the migrated schema: ``(name, asyncpg_url)``."""
    name = f"sidecar_t_versions_{os.getpid()}"
    url, _ = fresh_airflow_database(name, template=airflow_template.name)
    try:
        yield name, url
    finally:
        drop_database(name)


def _query(name: str, sql: str) -> list[tuple[object, ...]]:
    conn: psycopg2.extensions.connection = pg_connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


async def test_the_schema_revision_selects_the_row_contract_of_its_minor(
    schema_db: tuple[str, str], airflow_template: TemplateInfo
) -> None:
    _, url = schema_db
    contract = contract_for_revision(airflow_template.alembic_revision)
    assert contract is not None and contract.minor == AIRFLOW_MINOR
    db = connect(url)
    try:
        async with db.engine.connect() as conn:
            live = {
                table.name: {
                    c["name"]
                    for c in await conn.run_sync(lambda c, t=table.name: sa.inspect(c).get_columns(t))
                }
                for table in AIRFLOW_TABLES
            }
        if contract.not_yet is None:
            await prepare(db)
            assert db.airflow is contract
            assert SUPPORTED_AIRFLOW_REVISIONS[airflow_template.alembic_revision] == contract.minor
        else:  # a known version the sidecar does not write for yet (3.1): refused by name
            with pytest.raises(SchemaMismatch, match="does not support yet"):
                await prepare(db)
    finally:
        await db.dispose()
    for table in AIRFLOW_TABLES:
        declared = {c.name for c in table.columns}
        # Exactly the declared columns this Airflow has: none missing, none the contract forgot.
        assert set(contract.columns(table.name)) == declared & live[table.name], table.name


def test_the_shim_starts_only_on_an_airflow_it_is_proved_with(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
    )
    if AIRFLOW_MINOR in SHIM_MINORS:
        assert result.returncode == 0, result.stderr[-2000:]
        assert "airflow scheduler" in result.stdout.lower()  # Airflow's own `airflow scheduler --help`
    else:
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"airflow-sidecar scheduler: Airflow {AIRFLOW_VERSION} is not supported by the shim "
            "(supported: Airflow 3.1.x, 3.2.x, 3.3.x)"
        )


@pytest.mark.parametrize(
    ("revision", "named"),
    [
        (NEWER_REVISION, [NEWER_REVISION]),
        ("fe199e1abd77", ["fe199e1abd77"]),  # Airflow 3.0.3: older than the oldest supported
    ],
    ids=["newer", "3.0"],
)
def test_an_unsupported_revision_is_refused_in_one_line_and_nothing_is_written(
    schema_db: tuple[str, str], revision: str, named: list[str]
) -> None:
    name, url = schema_db
    _query(name, f"UPDATE alembic_version SET version_num = '{revision}'")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--database-url",
            url,
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in named:
        assert part in lines[0]
    assert SUPPORTED_RANGE in lines[0]  # "Airflow 3.1.0 to 3.3.2"
    assert "Traceback" not in result.stderr + result.stdout
    # Refused before the migration: not even the sidecar's own schema exists.
    assert _query(name, "SELECT 1 FROM pg_namespace WHERE nspname = 'airflow_sidecar'") == []
    assert _query(name, "SELECT count(*) FROM backfill") == [(0,)]
