"""Authorise what you act on (issue 10): the decision is made on the row a call loads or changes.

The race of issue 10: a principal with rights on DAG A names the *next* backfill id; when
another team's backfill of DAG B then takes that id, the call must see exactly what it saw
while the id was free (NOT_FOUND, byte for byte, on gRPC, ``/v1`` and ``/api/v2``) and
change nothing. The engine-level test calls the engine with the caller's access directly:
no interceptor pre-check stands between, so the refusal is the ledger's, on the loaded row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg2.extensions
import pytest
from google.rpc import status_pb2

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.auth import Access, Action, Principal, load_policy
from sidecar.errors import BackfillNotFound, PermissionDenied
from tests.support.authz import (
    ADMIN,
    ALICE,
    CAROL,
    DAG_A,
    DAG_B,
    STRANGER,
    Stack,
    authz_stack,
    create_request,
    header,
)
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

_DETAILS = "grpc-status-details-bin"


@pytest.fixture
async def stack(clean_db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[Stack]:
    async with authz_stack(clean_db, tmp_path) as running:
        yield running


def answer(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None, Any]:
    """Everything a caller sees of a failed call: code, message and the rich status bytes."""
    trailing = dict(error.trailing_metadata() or ())
    return error.code(), error.details(), trailing.get(_DETAILS)


async def failures(stack: Stack, name: str) -> list[tuple[grpc.StatusCode, str | None, Any]]:
    """What alice gets from every call naming ``name`` (each must fail)."""
    stub, seen = stack.stub, []
    for call in (
        lambda: stub.GetBackfill(pb.GetBackfillRequest(name=name), metadata=ALICE),
        lambda: stub.PauseBackfill(pb.PauseBackfillRequest(name=name), metadata=ALICE),
        lambda: stub.UnpauseBackfill(pb.UnpauseBackfillRequest(name=name), metadata=ALICE),
        lambda: stub.CancelBackfill(
            pb.CancelBackfillRequest(name=name, terminate_running=True), metadata=ALICE
        ),
        lambda: stub.ListBackfillRuns(pb.ListBackfillRunsRequest(parent=name), metadata=ALICE),
        lambda: stub.WatchBackfill(pb.WatchBackfillRequest(name=name), metadata=ALICE).read(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call()
        seen.append(answer(excinfo.value))
    return seen


async def http_failures(http: httpx.AsyncClient, backfill_id: int) -> list[tuple[int, bytes]]:
    """What alice gets from the REST routes naming ``backfill_id``."""
    alice = header("alice")
    responses = [await http.get(f"/api/v2/backfills/{backfill_id}", headers=alice)]
    for verb in ("pause", "unpause", "cancel"):
        responses.append(await http.put(f"/api/v2/backfills/{backfill_id}/{verb}", headers=alice))
    responses.append(await http.get(f"/v1/backfills/{backfill_id}", headers=alice))
    responses.append(await http.post(f"/v1/backfills/{backfill_id}:cancel", headers=alice, json={}))
    return [(r.status_code, r.content) for r in responses]


def snapshot(sql: psycopg2.extensions.cursor, backfill_id: int) -> list[tuple[Any, ...]]:
    sql.execute(
        "SELECT b.is_paused, b.completed_at, b.updated_at, s.phase,"
        " (SELECT count(*) FROM dag_run r WHERE r.backfill_id = b.id AND r.state = 'queued')"
        " FROM backfill b JOIN airflow_sidecar.sidecar_backfill s ON s.backfill_id = b.id WHERE b.id = %s",
        (backfill_id,),
    )
    return sql.fetchall()


async def test_the_next_id_taken_by_another_team_answers_not_found_and_changes_nothing(
    stack: Stack, sql: psycopg2.extensions.cursor
) -> None:
    mine = (await stack.stub.CreateBackfill(create_request(DAG_A), metadata=ALICE)).backfill
    following = f"backfills/{mine.id + 1}"
    while_free = await failures(stack, following)
    http_while_free = await http_failures(stack.http, mine.id + 1)

    theirs = (await stack.stub.CreateBackfill(create_request(DAG_B), metadata=ADMIN)).backfill
    assert theirs.name == following  # another team's backfill now holds the id alice named
    before = snapshot(sql, theirs.id)
    assert before and before[0][4] > 0  # open, with queued runs a cancel would fail

    assert await failures(stack, following) == while_free
    assert await http_failures(stack.http, theirs.id) == http_while_free
    assert {code for code, _, _ in while_free} == {grpc.StatusCode.NOT_FOUND}
    assert [status for status, _ in http_while_free] == [404] * 6
    assert http_while_free[0][1] == b'{"detail":"Backfill not found"}'  # Airflow's 404 body
    assert snapshot(sql, theirs.id) == before

    # Its owner still sees and steers it.
    got = await stack.stub.GetBackfill(pb.GetBackfillRequest(name=theirs.name), metadata=ADMIN)
    assert got.backfill.dag_id == DAG_B


async def test_unreadable_and_missing_are_the_same_answer(stack: Stack) -> None:
    theirs = (await stack.stub.CreateBackfill(create_request(DAG_B), metadata=ADMIN)).backfill
    missing = f"backfills/{theirs.id + 1000}"
    unreadable, absent = await failures(stack, theirs.name), await failures(stack, missing)
    # The same code and byte-equal status details; the message names the id the caller gave.
    for (code, message, raw), (code2, message2, raw2) in zip(unreadable, absent, strict=True):
        assert code == code2 == grpc.StatusCode.NOT_FOUND
        assert message == f"Backfill {theirs.id} not found"
        assert message2 == f"Backfill {theirs.id + 1000} not found"
        status, status2 = status_pb2.Status.FromString(raw), status_pb2.Status.FromString(raw2)
        assert status.code == status2.code
        assert [d.SerializeToString() for d in status.details] == [
            d.SerializeToString() for d in status2.details
        ]
        assert len(status.details) == 1  # ErrorInfo BACKFILL_NOT_FOUND, nothing about the row
    v2 = await stack.http.get(f"/api/v2/backfills/{theirs.id}", headers=header("alice"))
    v2_missing = await stack.http.get(f"/api/v2/backfills/{theirs.id + 1000}", headers=header("alice"))
    assert (
        (v2.status_code, v2.content)
        == (v2_missing.status_code, v2_missing.content)
        == (
            404,
            b'{"detail":"Backfill not found"}',
        )
    )


async def test_a_reader_without_the_action_is_denied_and_nothing_changes(
    stack: Stack, sql: psycopg2.extensions.cursor
) -> None:
    theirs = (await stack.stub.CreateBackfill(create_request(DAG_B), metadata=ADMIN)).backfill
    before = snapshot(sql, theirs.id)
    got = await stack.stub.GetBackfill(pb.GetBackfillRequest(name=theirs.name), metadata=CAROL)
    assert got.backfill.id == theirs.id  # carol may read DAG B
    for call in (
        stack.stub.PauseBackfill(pb.PauseBackfillRequest(name=theirs.name), metadata=CAROL),
        stack.stub.CancelBackfill(pb.CancelBackfillRequest(name=theirs.name), metadata=CAROL),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call
        assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert DAG_B in (excinfo.value.details() or "")
    response = await stack.http.put(f"/api/v2/backfills/{theirs.id}/cancel", headers=header("carol"))
    assert (response.status_code, response.json()) == (403, {"detail": "Forbidden"})
    assert snapshot(sql, theirs.id) == before
    # On DAG A carol may pause.
    mine = (await stack.stub.CreateBackfill(create_request(DAG_A), metadata=ALICE)).backfill
    paused = await stack.stub.PauseBackfill(pb.PauseBackfillRequest(name=mine.name), metadata=CAROL)
    assert paused.backfill.is_paused


async def test_a_stranger_is_refused_before_anything_is_read(stack: Stack) -> None:
    theirs = (await stack.stub.CreateBackfill(create_request(DAG_B), metadata=ADMIN)).backfill
    answers = []
    for name in (theirs.name, f"backfills/{theirs.id + 1000}"):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stack.stub.GetBackfill(pb.GetBackfillRequest(name=name), metadata=STRANGER)
        answers.append(answer(excinfo.value))
    assert answers[0] == answers[1] and answers[0][0] == grpc.StatusCode.PERMISSION_DENIED
    for call in (
        stack.stub.ListBackfills(pb.ListBackfillsRequest(), metadata=STRANGER),
        stack.stub.CreateBackfill(create_request(DAG_A), metadata=STRANGER),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call
        assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_ledger_refuses_on_the_loaded_row_without_any_interceptor(
    stack: Stack, sql: psycopg2.extensions.cursor, tmp_path: Path
) -> None:
    engine = stack.server.engine
    assert engine is not None
    theirs = (await stack.stub.CreateBackfill(create_request(DAG_B), metadata=ADMIN)).backfill
    before = snapshot(sql, theirs.id)
    policy = load_policy(tmp_path / "policy.toml")
    alice = Principal("alice")
    expected = BackfillNotFound.of(theirs.id)
    calls = [
        engine.get(theirs.id, access=Access(alice, policy, Action.READ)),
        engine.list_runs(theirs.id, page_size=10, after_ordinal=0, access=Access(alice, policy, Action.READ)),
        engine.set_paused(theirs.id, True, access=Access(alice, policy, Action.PAUSE)),
        engine.cancel(theirs.id, terminate_running=True, access=Access(alice, policy, Action.CANCEL)),
    ]
    for call in calls:
        with pytest.raises(BackfillNotFound) as excinfo:
            await call
        assert (excinfo.value.message, excinfo.value.reason) == (expected.message, expected.reason)
    with pytest.raises(PermissionDenied):
        await engine.cancel(theirs.id, access=Access(Principal("carol"), policy, Action.CANCEL))
    assert snapshot(sql, theirs.id) == before
    listed, _ = await engine.list_backfills(
        dag_id=None, state=None, page_size=10, before_id=None, access=Access(alice, policy)
    )
    assert listed == []
