"""Listings show only readable DAGs in full pages; page tokens are sealed and bound (issue 10).

A page token is encrypted and authenticated under the ledger's key, bound to the listing's
filters and to the caller: it reveals no id, and a tampered token, another principal's, or
one from another listing is INVALID_ARGUMENT ``page_token``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg2.extensions
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.auth import Access, PageTokens, Principal, parse_policy
from sidecar.errors import InvalidArgument
from tests.security.test_errors_leak import field_violations
from tests.support.authz import ADMIN, ALICE, DAG_A, DAG_B, Stack, authz_stack, bearer, create_request
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]


@pytest.fixture
async def stack(clean_db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[Stack]:
    async with authz_stack(clean_db, tmp_path) as running:
        yield running


def airflow_backfills(sql: psycopg2.extensions.cursor, dag_ids: list[str]) -> list[int]:
    """Finished backfills as Airflow's own API makes them (no sidecar row), in this order; their ids."""
    ids = []
    for dag_id in dag_ids:
        sql.execute(
            "INSERT INTO backfill (dag_id, from_date, to_date, dag_run_conf, is_paused, reprocess_behavior,"
            " max_active_runs, created_at, updated_at, completed_at)"
            " VALUES (%s, '2025-01-01', '2025-01-02', '{}', false, 'none', 1, now(), now(), now()) RETURNING id",
            (dag_id,),
        )
        ids.append(sql.fetchone()[0])
    return ids


async def pages(stack: Stack, metadata: tuple[tuple[str, str]], size: int) -> list[list[int]]:
    found, token = [], ""
    while True:
        page = await stack.stub.ListBackfills(
            pb.ListBackfillsRequest(page_size=size, page_token=token), metadata=metadata
        )
        found.append([b.id for b in page.backfills])
        token = page.next_page_token
        if not token:
            return found


async def test_pages_are_full_of_readable_backfills(stack: Stack, sql: psycopg2.extensions.cursor) -> None:
    dags = [DAG_A, DAG_B, DAG_B, DAG_A, DAG_B, DAG_B, DAG_B, DAG_A, DAG_B, DAG_A, DAG_A]
    ids = airflow_backfills(sql, dags)
    newest_first = sorted((i for i, dag_id in zip(ids, dags, strict=True) if dag_id == DAG_A), reverse=True)
    assert await pages(stack, ALICE, 2) == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert [i for page in await pages(stack, ADMIN, 4) for i in page] == sorted(ids, reverse=True)


async def test_a_listing_the_policy_narrows_only_after_sql_stays_bounded_and_complete(
    stack: Stack, sql: psycopg2.extensions.cursor
) -> None:
    # The engine narrows in SQL by a superset of the globs ("sidecar_[e]*" is LIKE
    # 'sidecar\_%', which DAG B matches too) and keeps what the policy accepts, a few chunks
    # per call: pages may come back short, but the tokens walk every readable backfill once.
    engine = stack.server.engine
    assert engine is not None
    ids = airflow_backfills(sql, [DAG_A] * 2 + [DAG_B] * 30 + [DAG_A] * 3)
    policy = parse_policy(
        {"rule": [{"principals": ["p"], "dags": ["sidecar_[e]*"], "actions": ["read"]}]}, "t"
    )
    access = Access(Principal("p"), policy)
    seen: list[int] = []
    before: int | None = None
    calls = 0
    while True:
        views, before = await engine.list_backfills(
            dag_id=None, state=None, page_size=2, before_id=before, access=access
        )
        calls += 1
        seen += [v.id for v in views]
        assert all(v.dag_id == DAG_A for v in views)
        if before is None:
            break
    assert seen == sorted(ids[:2] + ids[-3:], reverse=True)
    assert calls > 3  # the 30 unreadable rows were crossed in bounded steps, not in one call


async def test_tokens_are_sealed_and_bound_to_the_listing_and_the_caller(
    stack: Stack, sql: psycopg2.extensions.cursor
) -> None:
    ids = airflow_backfills(sql, [DAG_A] * 5)
    first = await stack.stub.ListBackfills(pb.ListBackfillsRequest(page_size=2), metadata=ALICE)
    token = first.next_page_token
    assert token
    # Nothing in clear: not the id, as text or as bytes; two tokens for one position differ.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    position = ids[-2]
    for needle in (str(position).encode(), position.to_bytes(4, "big"), position.to_bytes(8, "big")):
        assert needle not in raw
    again = await stack.stub.ListBackfills(pb.ListBackfillsRequest(page_size=2), metadata=ALICE)
    assert again.next_page_token != token
    # Both continue where they should.
    for value in (token, again.next_page_token):
        page = await stack.stub.ListBackfills(
            pb.ListBackfillsRequest(page_size=2, page_token=value), metadata=ALICE
        )
        assert [b.id for b in page.backfills] == sorted(ids, reverse=True)[2:4]

    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    refused = [
        (tampered, ALICE, pb.ListBackfillsRequest(page_size=2)),
        (token, bearer("alice2", role="ADMIN"), pb.ListBackfillsRequest(page_size=2)),  # another principal
        (token, ALICE, pb.ListBackfillsRequest(page_size=2, dag_id=DAG_A)),  # another listing
        (token, ALICE, pb.ListBackfillsRequest(page_size=2, state=pb.Backfill.STATE_COMPLETED)),
        (token[:-2], ALICE, pb.ListBackfillsRequest(page_size=2)),
    ]
    for value, metadata, request in refused:
        request.page_token = value
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stack.stub.ListBackfills(request, metadata=metadata)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(excinfo.value) == ["page_token"]


async def test_run_tokens_are_bound_to_their_backfill_and_caller(stack: Stack) -> None:
    mine = (await stack.stub.CreateBackfill(create_request(DAG_A), metadata=ALICE)).backfill
    other = await stack.stub.CreateBackfill(create_request(DAG_B), metadata=ADMIN)
    runs = await stack.stub.ListBackfillRuns(
        pb.ListBackfillRunsRequest(parent=mine.name, page_size=1), metadata=ALICE
    )
    assert runs.next_page_token
    more = await stack.stub.ListBackfillRuns(
        pb.ListBackfillRunsRequest(parent=mine.name, page_size=1, page_token=runs.next_page_token),
        metadata=ALICE,
    )
    assert more.runs[0].sort_ordinal == runs.runs[0].sort_ordinal + 1
    # Another backfill, another caller, or both: refused before any row is read.
    for parent, metadata in ((other.backfill.name, ADMIN), (mine.name, ADMIN), (other.backfill.name, ALICE)):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stack.stub.ListBackfillRuns(
                pb.ListBackfillRunsRequest(parent=parent, page_token=runs.next_page_token), metadata=metadata
            )
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(excinfo.value) == ["page_token"]


def test_the_codec_refuses_what_it_did_not_issue() -> None:
    tokens, other = PageTokens(b"k" * 32), PageTokens(b"j" * 32)
    context = PageTokens.context("backfills", "alice", "", 0)
    issued = tokens.issue(2**31 - 1, context)
    assert tokens.read(issued, context) == 2**31 - 1
    assert tokens.read("", context) is None
    for bad, key in ((issued, other), ("not a token", tokens), ("é", tokens), (issued + "AA", tokens)):
        with pytest.raises(InvalidArgument) as excinfo:
            key.read(bad, context)
        assert excinfo.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        tokens.read(issued, PageTokens.context("backfills", "alice", None, 0))
    with pytest.raises(ValueError, match="32 bytes"):
        PageTokens(b"short")
