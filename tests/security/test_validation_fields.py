"""Validate at the edge, write nothing on refusal: ids, filters, numbers and dates (issue 10).

Every refusal is INVALID_ARGUMENT naming its field (400 on ``/v1``, a 4xx on ``/api/v2``),
with no row written; and a create whose first write fails after every check passed
leaves no row behind either (its rows and first batch are one transaction).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc
import httpx
import psycopg2.extensions
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.engine import BackfillEngine, BackfillSpec
from sidecar.engine._requests import DATE_RANGE, check_request
from sidecar.errors import InvalidArgument
from tests.security.test_errors_leak import (
    FROM,
    THREE,
    TO,
    assert_clean,
    call,
    create_request,
    field_violations,
)
from tests.security.test_validation_conf import assert_nothing_written


async def refused(
    channel: grpc.aio.Channel, request: pb.CreateBackfillRequest | pb.ListBackfillsRequest
) -> str:
    """The field an INVALID_ARGUMENT answer names."""
    if isinstance(request, pb.ListBackfillsRequest):
        outcome = await call(channel, "ListBackfills", request, pb.ListBackfillsResponse)
    else:
        outcome = await call(channel, "CreateBackfill", request, pb.CreateBackfillResponse)
    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
    assert outcome.code() is grpc.StatusCode.INVALID_ARGUMENT, outcome.details()
    assert_clean(outcome.details() or "")
    (field,) = field_violations(outcome)
    return field


def dated(from_date: str, to_date: str = TO) -> pb.CreateBackfillRequest:
    request = create_request()
    request.backfill.from_date.FromJsonString(from_date)
    request.backfill.to_date.FromJsonString(to_date)
    return request


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "a\rb", "\x1b[31mred", "a\x7fb", "a\x85b"])
async def test_control_characters_in_ids_and_filters(
    bad: str, channel: grpc.aio.Channel, http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    assert await refused(channel, create_request(bad)) == "backfill.dag_id"
    assert await refused(channel, create_request(bad, validate_only=True)) == "backfill.dag_id"
    assert await refused(channel, create_request(request_id=f"r{bad}")) == "request_id"
    assert await refused(channel, pb.ListBackfillsRequest(dag_id=bad)) == "dag_id"
    v1 = [
        await http.post("/v1/backfills", json={"dagId": bad, "fromDate": FROM, "toDate": TO}),
        await http.post(
            "/v1/backfills", params={"requestId": bad}, json={"dagId": THREE, "fromDate": FROM, "toDate": TO}
        ),
        await http.get("/v1/backfills", params={"dagId": bad}),
    ]
    assert [r.status_code for r in v1] == [400, 400, 400], [r.text for r in v1]
    v2 = [
        await http.post("/api/v2/backfills", json={"dag_id": bad, "from_date": FROM, "to_date": TO}),
        await http.post("/api/v2/backfills/dry_run", json={"dag_id": bad, "from_date": FROM, "to_date": TO}),
    ]
    for response in v2:
        assert 400 <= response.status_code < 500, response.text
        assert_clean(response.text)
    assert_nothing_written(sql)


async def test_lone_surrogates_in_ids_over_json(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    # gRPC strings are UTF-8 on the wire (protobuf refuses a lone surrogate); JSON can escape one.
    for path, body in [
        ("/v1/backfills", f'{{"dagId": "a\\ud800", "fromDate": "{FROM}", "toDate": "{TO}"}}'),
        ("/api/v2/backfills", f'{{"dag_id": "a\\ud800", "from_date": "{FROM}", "to_date": "{TO}"}}'),
        ("/api/v2/backfills/dry_run", f'{{"dag_id": "\\udfff", "from_date": "{FROM}", "to_date": "{TO}"}}'),
    ]:
        response = await http.post(path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, response.text)
        assert_clean(response.text)
    assert_nothing_written(sql)


async def test_airflows_lengths(channel: grpc.aio.Channel, sql: psycopg2.extensions.cursor) -> None:
    assert await refused(channel, create_request("d" * 251)) == "backfill.dag_id"
    assert await refused(channel, create_request(request_id="r" * 129)) == "request_id"
    assert await refused(channel, pb.ListBackfillsRequest(dag_id="d" * 251)) == "dag_id"
    # At the limits: no such DAG (250) / a create that goes through (128).
    outcome = await call(channel, "CreateBackfill", create_request("d" * 250), pb.CreateBackfillResponse)
    assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() is grpc.StatusCode.NOT_FOUND
    assert_nothing_written(sql)
    ok = await call(
        channel, "CreateBackfill", create_request(request_id="r" * 128), pb.CreateBackfillResponse
    )
    assert isinstance(ok, pb.CreateBackfillResponse), ok


@pytest.mark.parametrize("runs", [0, -1, 10_001, 2**31 - 1])
async def test_max_active_runs_in_range(
    runs: int, channel: grpc.aio.Channel, http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    request = create_request()
    request.backfill.max_active_runs = runs
    assert await refused(channel, request) == "backfill.max_active_runs"
    v2 = await http.post(
        "/api/v2/backfills", json={"dag_id": THREE, "from_date": FROM, "to_date": TO, "max_active_runs": runs}
    )
    assert 400 <= v2.status_code < 500, v2.text
    assert_nothing_written(sql)


@pytest.mark.parametrize(
    ("from_date", "to_date", "field"),
    [
        ("0001-01-01T00:00:00Z", TO, "backfill.from_date"),  # once stored as -infinity, a slot "in flight"
        ("1899-12-31T23:59:59Z", TO, "backfill.from_date"),
        ("2025-01-01T00:00:00Z", "9000-01-01T00:00:00Z", "backfill.to_date"),
        ("2025-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "backfill.to_date"),
    ],
)
async def test_dates_outside_the_supported_range(
    from_date: str,
    to_date: str,
    field: str,
    channel: grpc.aio.Channel,
    http: httpx.AsyncClient,
    sql: psycopg2.extensions.cursor,
) -> None:
    assert await refused(channel, dated(from_date, to_date)) == field
    v1 = await http.post("/v1/backfills", json={"dagId": THREE, "fromDate": from_date, "toDate": to_date})
    assert v1.status_code == 400, v1.text
    v2 = await http.post(
        "/api/v2/backfills", json={"dag_id": THREE, "from_date": from_date, "to_date": to_date}
    )
    assert 400 <= v2.status_code < 500, v2.text
    assert_clean(v1.text + v2.text)
    assert_nothing_written(sql)


def test_the_date_range_bounds_are_inclusive_then_exclusive() -> None:
    first, last = DATE_RANGE
    for value in (first, last - dt.timedelta(microseconds=1)):
        check_request(BackfillSpec(THREE, value, value), None, None)
    for value in (first - dt.timedelta(microseconds=1), last):
        with pytest.raises(InvalidArgument) as raised:
            check_request(BackfillSpec(THREE, value, value), None, None)
        assert raised.value.field == "backfill.from_date"


@pytest.fixture
def failing_run_insert(sql: psycopg2.extensions.cursor) -> Iterator[None]:
    """Every ``dag_run`` insert fails (a trigger): the first batch fails after every check passed."""
    sql.execute(
        "CREATE FUNCTION refuse_run() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
    )
    sql.execute(
        "CREATE TRIGGER refuse_run BEFORE INSERT ON dag_run FOR EACH ROW EXECUTE FUNCTION refuse_run()"
    )
    try:
        yield
    finally:
        sql.execute("DROP TRIGGER refuse_run ON dag_run")
        sql.execute("DROP FUNCTION refuse_run()")


@pytest.mark.usefixtures("failing_run_insert")
async def test_a_create_whose_first_write_fails_leaves_no_row(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    spec = BackfillSpec(THREE, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 3, tzinfo=dt.UTC))
    with pytest.raises(Exception, match="refused by the test"):
        await engine.create(spec)
    assert_nothing_written(sql)
