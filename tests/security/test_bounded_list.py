"""Lists page in the database (issue 10): ``/api/v2/backfills`` with 20,000 backfills reads
one page and a count, not every page of the table. Statements are counted with a
SQLAlchemy event listener on the server's engine, never timed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.server import SidecarServer

DAG = "sidecar_it_params"
ROWS = 20_000


@pytest.fixture
def many_backfills(sql: psycopg2.extensions.cursor) -> list[int]:
    """20,000 completed backfills of one DAG, inserted in one statement; their ids, ascending."""
    sql.execute(
        """
        INSERT INTO backfill (dag_id, from_date, to_date, dag_run_conf, is_paused, reprocess_behavior,
                              max_active_runs, created_at, completed_at, updated_at)
        SELECT %s, now() - make_interval(days => n + 1), now() - make_interval(days => n), '{}', false,
               'none', 1, now(), now(), now()
        FROM generate_series(1, %s) AS n
        """,
        (DAG, ROWS),
    )
    sql.execute("SELECT id FROM backfill WHERE dag_id = %s ORDER BY id", (DAG,))
    return [row[0] for row in sql.fetchall()]


@pytest.fixture
def statements(server: SidecarServer) -> Iterator[list[str]]:
    """Every SQL statement the server runs while the test does."""
    assert server.db is not None
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    target = server.db.engine.sync_engine
    sa.event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(target, "before_cursor_execute", record)


def assert_bounded(statements: list[str]) -> None:
    """A few statements, and none reading the backfill table without a LIMIT or a count."""
    assert len(statements) <= 4, "\n".join(s[:160] for s in statements)
    for statement in statements:
        if "FROM backfill" in statement and "count(" not in statement:
            assert "LIMIT" in statement, statement


@pytest.mark.parametrize(("order_by", "descending"), [("id", False), ("-id", True)])
async def test_airflow_list_reads_one_page_and_a_count(
    http: httpx.AsyncClient, many_backfills: list[int], statements: list[str], order_by: str, descending: bool
) -> None:
    ordered = many_backfills[::-1] if descending else many_backfills
    # Warm up first: the server's start-up tick and the page-token key (read once per server).
    assert (await http.get("/api/v2/backfills", params={"dag_id": DAG, "limit": 1})).status_code == 200
    statements.clear()
    response = await http.get(
        "/api/v2/backfills", params={"dag_id": DAG, "limit": 10, "offset": 15_000, "order_by": order_by}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total_entries"] == ROWS
    assert [b["id"] for b in body["backfills"]] == ordered[15_000:15_010]
    assert_bounded(statements)
    # Past the end: an empty page, the same total.
    past = await http.get("/api/v2/backfills", params={"dag_id": DAG, "offset": ROWS})
    assert past.json() == {"backfills": [], "total_entries": ROWS}


async def test_grpc_list_pages_with_skip_total_size_and_order(
    server: SidecarServer, many_backfills: list[int], statements: list[str]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        # Warm up first: the server's start-up tick and the page-token key (read once per server).
        await stub.ListBackfills(pb.ListBackfillsRequest(dag_id=DAG, page_size=1), timeout=30)
        statements.clear()
        first = await stub.ListBackfills(
            pb.ListBackfillsRequest(dag_id=DAG, page_size=3, skip=5, order_by="id"), timeout=30
        )
        assert_bounded(statements)
        following = await stub.ListBackfills(
            pb.ListBackfillsRequest(dag_id=DAG, page_size=3, order_by="id", page_token=first.next_page_token),
            timeout=30,
        )
        newest = await stub.ListBackfills(pb.ListBackfillsRequest(dag_id=DAG, page_size=2), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListBackfills(pb.ListBackfillsRequest(order_by="dag_id"), timeout=30)
    assert [b.id for b in first.backfills] == many_backfills[5:8]
    assert [b.id for b in following.backfills] == many_backfills[8:11]
    assert [b.id for b in newest.backfills] == many_backfills[:-3:-1]
    assert first.total_size == following.total_size == newest.total_size == ROWS
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
