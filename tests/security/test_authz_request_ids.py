"""``request_id`` is scoped to the principal (issue 10): no caller learns or squats another's ids.

Also the ledger's migration to it, on PostgreSQL and on SQLite: a database made before
(``request_id`` unique on its own, no page-token key) is brought to the new shape with
its rows kept.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg2.extensions
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.engine import BackfillEngine, BackfillSpec
from sidecar.store import connect, prepare
from sidecar.store._database import _MIGRATIONS
from tests.integration.test_engine_sqlite import db_path, sqlite_template  # noqa: F401  (fixtures)
from tests.support.authz import ADMIN, ALICE, DAG_A, DAG_B, Stack, authz_stack, bearer, create_request
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]


@pytest.fixture
async def stack(clean_db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[Stack]:
    async with authz_stack(clean_db, tmp_path) as running:
        yield running


async def test_two_principals_with_one_request_id_get_two_backfills(
    stack: Stack, sql: psycopg2.extensions.cursor
) -> None:
    request = create_request(DAG_A, request_id="nightly-1")
    mine = (await stack.stub.CreateBackfill(request, metadata=ALICE)).backfill
    assert (await stack.stub.CreateBackfill(request, metadata=ALICE)).backfill.id == mine.id  # idempotent

    # Another request under alice's id: no "already used" (which told who used it), a backfill.
    other = await stack.stub.CreateBackfill(create_request(DAG_B, request_id="nightly-1"), metadata=ADMIN)
    assert other.backfill.dag_id == DAG_B
    # Alice's very request from another principal: a backfill of its own, never hers.
    await stack.stub.CancelBackfill(pb.CancelBackfillRequest(name=mine.name), metadata=ALICE)
    theirs = (await stack.stub.CreateBackfill(request, metadata=bearer("root2", role="ADMIN"))).backfill
    assert theirs.id not in (mine.id, other.backfill.id)
    assert theirs.triggering_user_name == "root2"
    # Each principal's replay still answers with its own.
    assert (await stack.stub.CreateBackfill(request, metadata=ALICE)).backfill.id == mine.id
    sql.execute(
        "SELECT principal, request_id, backfill_id FROM airflow_sidecar.sidecar_backfill ORDER BY backfill_id"
    )
    assert sql.fetchall() == [
        ("alice", "nightly-1", mine.id),
        ("root", "nightly-1", other.backfill.id),
        ("root2", "nightly-1", theirs.id),
    ]


def spec(dag_id: str = DAG_A) -> BackfillSpec:
    request = create_request(dag_id).backfill
    return BackfillSpec(
        dag_id=dag_id,
        from_date=request.from_date.ToDatetime(tzinfo=dt.UTC),
        to_date=request.to_date.ToDatetime(tzinfo=dt.UTC),
    )


_OLD_SHAPE_PG = (
    "DROP TABLE airflow_sidecar.sidecar_secret",
    "ALTER TABLE airflow_sidecar.sidecar_backfill DROP CONSTRAINT sidecar_backfill_principal_request_id_key",
    "ALTER TABLE airflow_sidecar.sidecar_backfill DROP COLUMN principal",
    "ALTER TABLE airflow_sidecar.sidecar_backfill ADD CONSTRAINT sidecar_backfill_request_id_key UNIQUE (request_id)",
    "DELETE FROM airflow_sidecar.sidecar_schema_version WHERE version > 1",
)


async def test_the_migration_scopes_request_ids_on_postgresql(
    clean_db: AirflowDatabase, sql: psycopg2.extensions.cursor
) -> None:
    db = connect(clean_db.asyncpg_url)
    try:
        await prepare(db)
        engine = BackfillEngine(db)
        old = await engine.create(spec(), request_id="before")
        await engine.cancel(old.id)
        for statement in _OLD_SHAPE_PG:
            sql.execute(statement)

        await prepare(db)
        sql.execute("SELECT principal, request_id FROM airflow_sidecar.sidecar_backfill")
        assert sql.fetchall() == [("", "before")]
        sql.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'airflow_sidecar.sidecar_backfill'::regclass AND contype = 'u'"
        )
        assert sql.fetchall() == [
            ("sidecar_backfill_principal_request_id_key", "UNIQUE (principal, request_id)")
        ]
        sql.execute("SELECT length(value) FROM airflow_sidecar.sidecar_secret WHERE name = 'page_token_key'")
        assert sql.fetchall() == [(64,)]
        sql.execute("SELECT max(version) FROM airflow_sidecar.sidecar_schema_version")
        assert sql.fetchone() == (len(_MIGRATIONS),)
        again = await BackfillEngine(db).create(spec(), request_id="before", principal="someone")
        assert again.id != old.id
    finally:
        await db.dispose()


async def test_the_migration_scopes_request_ids_on_sqlite(db_path: Path) -> None:  # noqa: F811
    url = f"sqlite+aiosqlite:///{db_path}"
    db = connect(url)
    try:
        await prepare(db)
        engine = BackfillEngine(db)
        old = await engine.create(spec(), request_id="before")
        await engine.cancel(old.id)
        with sqlite3.connect(db_path) as conn:
            (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sidecar_backfill'").fetchone()
            old_ddl = re.sub(r",\s*principal [^,]*", "", ddl)
            old_ddl = re.sub(
                r"CONSTRAINT sidecar_backfill_principal_request_id_key UNIQUE \(principal, request_id\)",
                "UNIQUE (request_id)",
                old_ddl,
            )
            assert "principal" not in old_ddl and "UNIQUE (request_id)" in old_ddl
            columns = ", ".join(
                r[1] for r in conn.execute("PRAGMA table_info(sidecar_backfill)") if r[1] != "principal"
            )
            conn.executescript(
                "ALTER TABLE sidecar_backfill RENAME TO new_shape;"
                f"{old_ddl};"
                f"INSERT INTO sidecar_backfill ({columns}) SELECT {columns} FROM new_shape;"
                "DROP TABLE new_shape; DROP TABLE sidecar_secret;"
                "DELETE FROM sidecar_schema_version WHERE version > 1;"
            )
        await db.dispose()
        db = connect(url)
        await prepare(db)
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT principal, request_id FROM sidecar_backfill").fetchall() == [
                ("", "before")
            ]
            assert conn.execute("SELECT count(*) FROM sidecar_secret").fetchone() == (1,)
            (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sidecar_backfill'").fetchone()
            assert "UNIQUE (principal, request_id)" in ddl and "UNIQUE (request_id)" not in ddl
        again = await BackfillEngine(db).create(spec(), request_id="before", principal="someone")
        assert again.id != old.id
    finally:
        await db.dispose()
