"""Validate at the edge, write nothing on refusal: a run ``conf`` (issue 10, "One conf stops every backfill").

``{"a": "\\u0000"}`` and a lone surrogate were accepted, the ``backfill`` row committed, and
the first ``dag_run`` insert failed (PostgreSQL's ``jsonb`` refuses both): a 500 that left
a backfill every tick then failed on. They are replayed over gRPC, ``/v1`` and ``/api/v2``
against a real server on the real Airflow schema; then a property test throws generated
documents at gRPC and ``/api/v2`` (through the gateway in-process) and holds every answer
to a refusal (INVALID_ARGUMENT / 4xx) with nothing written, or a write whose stored
``conf`` equals the input: never a 5xx, never an internal detail.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.engine._requests import MAX_CONF_BYTES
from sidecar.server import SidecarServer
from tests.integration.conftest import running_server
from tests.security.test_errors_leak import (
    FROM,
    LEAKS,
    THREE,
    TO,
    call,
    create_request,
    field_violations,
    nested,
)
from tests.support.fixtures import AirflowDatabase

#: The tables a refused create must leave untouched.
TABLES = ("backfill", "airflow_sidecar.sidecar_backfill", "dag_run", "backfill_dag_run", "task_instance")
#: Conf documents the issue reproduced, and the JSON text that carries each.
POISON = {
    "nul value": '{"a": "\\u0000"}',
    "nul key": '{"\\u0000": 1}',
    "lone surrogate": '{"a": "\\ud800"}',
    "lone low surrogate in a list": '{"a": ["ok", "\\udfff"]}',
    "beyond 64 bits": '{"a": 18446744073709551616}',
}


@pytest.fixture
async def server(clean_db: AirflowDatabase) -> AsyncIterator[SidecarServer]:
    """The integration server without its write rate limit (this module creates hundreds of backfills)
    and without its notifier loop (the property test draws beside it)."""
    async with running_server(clean_db, notifier=False, writes_per_minute=0) as srv:
        yield srv


def row_counts(sql: psycopg2.extensions.cursor) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        sql.execute(f"SELECT count(*) FROM {table}")
        counts[table] = int(sql.fetchone()[0])
    return counts


def assert_nothing_written(sql: psycopg2.extensions.cursor) -> None:
    assert row_counts(sql) == dict.fromkeys(TABLES, 0)


def forget_backfills(sql: psycopg2.extensions.cursor) -> None:
    for statement in (
        "DELETE FROM task_instance",
        "DELETE FROM backfill_dag_run",
        "DELETE FROM dag_run",
        "DELETE FROM airflow_sidecar.sidecar_backfill",
        "DELETE FROM backfill",
    ):
        sql.execute(statement)


def assert_clean_of(answer: str, sent: str) -> None:
    """No internal detail in an answer (a word the caller sent itself may come back)."""
    for word in LEAKS:
        assert word not in answer or word in sent, (word, answer[:300])


@pytest.mark.parametrize("conf", list(POISON.values()), ids=list(POISON))
async def test_poisoned_conf_is_refused_on_every_api_and_writes_nothing(
    conf: str, channel: grpc.aio.Channel, http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    for validate_only in (False, True):
        error = await call(
            channel,
            "CreateBackfill",
            create_request(conf=conf, validate_only=validate_only),
            pb.CreateBackfillResponse,
        )
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert field_violations(error) == ["backfill.dag_run_conf"]
        assert_clean_of(error.details() or "", conf)
    v1 = await http.post(
        "/v1/backfills", json={"dagId": THREE, "fromDate": FROM, "toDate": TO, "dagRunConf": conf}
    )
    assert v1.status_code == 400, v1.text
    assert v1.json()["error"]["status"] == "INVALID_ARGUMENT"
    raw = f'{{"dag_id": "{THREE}", "from_date": "{FROM}", "to_date": "{TO}", "dag_run_conf": {conf}}}'
    for path in ("/api/v2/backfills", "/api/v2/backfills/dry_run"):
        v2 = await http.post(path, content=raw, headers={"content-type": "application/json"})
        assert v2.status_code == 422, v2.text
        assert "dag_run_conf" in v2.text
        assert_clean_of(v2.text, raw)
    assert_nothing_written(sql)
    # The DAG is not blocked: a clean create of it goes through at once.
    created = await call(
        channel, "CreateBackfill", create_request(conf='{"a": "b"}'), pb.CreateBackfillResponse
    )
    assert isinstance(created, pb.CreateBackfillResponse), created


async def test_size_and_depth_limits(channel: grpc.aio.Channel, sql: psycopg2.extensions.cursor) -> None:
    room = MAX_CONF_BYTES - len('{"a":""}')
    fits = json.dumps({"a": "x" * room}, separators=(",", ":"))
    ok = await call(channel, "CreateBackfill", create_request(conf=fits), pb.CreateBackfillResponse)
    assert isinstance(ok, pb.CreateBackfillResponse), ok
    forget_backfills(sql)
    too_big = json.dumps({"a": "x" * (room + 1)})
    error = await call(channel, "CreateBackfill", create_request(conf=too_big), pb.CreateBackfillResponse)
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_CONF_BYTES}" in (error.details() or "")
    # Multi-byte characters count as their UTF-8 bytes.
    wide = json.dumps({"a": "é" * (room // 2 + 1)}, ensure_ascii=False)
    error = await call(channel, "CreateBackfill", create_request(conf=wide), pb.CreateBackfillResponse)
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert_nothing_written(sql)


# ---------------------------------------------------------------- the property test

_CHARACTERS = st.one_of(
    st.characters(),  # any code point but surrogates
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\U0001f600", "\u2028", "\\", '"']),
)
_TEXT = st.lists(_CHARACTERS, max_size=12).map("".join)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and the infinities included
    _TEXT,
    st.integers(min_value=60_000, max_value=70_000).map(lambda n: "x" * n),  # around the size limit
)
_DOCUMENTS = st.one_of(
    st.dictionaries(
        _TEXT,
        st.recursive(
            _SCALARS,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
            max_leaves=12,
        ),
        max_size=5,
    ),
    st.integers(min_value=1, max_value=90).map(lambda depth: {"deep": nested(depth)}),
)


def storable(value: Any) -> bool:
    """The oracle for what must be refused: NUL, lone surrogates, non-finite numbers (a subset of the rules)."""
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v) for v in value)
    return True


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``jsonb`` may write 1e300 back as an integer)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b if isinstance(a, int) and isinstance(b, int) else float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def stored_confs(sql: psycopg2.extensions.cursor) -> list[Any]:
    sql.execute("SELECT dag_run_conf::text FROM backfill")
    confs = [json.loads(text) for (text,) in sql.fetchall()]
    sql.execute("SELECT conf::text FROM dag_run")
    return confs + [json.loads(text) for (text,) in sql.fetchall()]


@pytest.fixture
async def loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    yield asyncio.get_running_loop()


async def test_generated_conf_documents_are_refused_or_stored_exactly(
    server: SidecarServer,
    http: httpx.AsyncClient,
    sql: psycopg2.extensions.cursor,
    loop: asyncio.AbstractEventLoop,
) -> None:
    target = f"127.0.0.1:{server.port}"
    seen = {"refused": 0, "stored": 0}

    def over_grpc(stub: backfill_pb2_grpc.BackfillServiceStub, text: str) -> tuple[int, str]:
        try:
            stub.CreateBackfill(create_request(conf=text), timeout=30)
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, error.details())  # type: ignore[attr-defined]
            return 400, error.details() or ""  # type: ignore[attr-defined]
        return 200, ""

    def over_v2(text: str) -> tuple[int, str]:
        body = f'{{"dag_id": "{THREE}", "from_date": "{FROM}", "to_date": "{TO}", "dag_run_conf": {text}}}'
        request = http.post("/api/v2/backfills", content=body, headers={"content-type": "application/json"})
        response = asyncio.run_coroutine_threadsafe(request, loop).result(60)
        return response.status_code, response.text

    def run() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = backfill_pb2_grpc.BackfillServiceStub(channel)

            @given(document=_DOCUMENTS, api=st.sampled_from(["grpc", "api/v2"]))
            @settings(
                max_examples=120,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(document: dict[str, Any], api: str) -> None:
                forget_backfills(sql)  # a clean slate, also after a failed example hypothesis replays
                text = json.dumps(document, allow_nan=True)  # NaN/Infinity as the tokens a client might send
                # What the text means (two escaped lone surrogates side by side read as one pair).
                meant = json.loads(text)
                status, answer = over_grpc(stub, text) if api == "grpc" else over_v2(text)
                assert status < 500, (api, status, answer[:300])
                assert_clean_of(answer, text)
                if status >= 400:
                    assert_nothing_written(sql)
                    seen["refused"] += 1
                    return
                assert storable(meant), (api, text[:300])
                confs = stored_confs(sql)
                assert len(confs) == 1 + 3  # the backfill's and its first three runs' (2025-01-01..03)
                assert all(same_json(conf, meant) for conf in confs), (text[:300], confs[0])
                seen["stored"] += 1

            check()

    await asyncio.to_thread(run)
    # Both outcomes were exercised.
    assert seen["refused"] > 10 and seen["stored"] > 10, seen
