"""Airflow 3.3.2's backfill routes on the gateway: its JSON, status codes and errors, and its own client."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from typing import Any

import airflow_client.client as airflow_client
import httpx
import psycopg2.extensions
import pytest
import uvicorn

from sidecar.gateway import Gateway
from tests.integration import test_gateway as base
from tests.support.waiting import wait_until

# The gRPC server, gateway and httpx client fixtures of the /v1 tests.
THREE = base.THREE
count_backfills = base.count_backfills

BODY: dict[str, Any] = {
    "dag_id": THREE,
    "from_date": "2025-01-01T00:00:00Z",
    "to_date": "2025-01-05T00:00:00Z",
    "max_active_runs": 2,
}
RESPONSE_KEYS = {
    "id",
    "dag_id",
    "from_date",
    "to_date",
    "dag_run_conf",
    "is_paused",
    "reprocess_behavior",
    "max_active_runs",
    "created_at",
    "completed_at",
    "updated_at",
    "dag_display_name",
    # sidecar extensions (docs/controls.md)
    "max_failed_runs",
    "priority",
    "pause_reason",
    "dag_max_active_runs",
    "concurrent",
}


async def test_airflow_routes_json_and_codes(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    dry = await http.post("/api/v2/backfills/dry_run", json=BODY)
    assert dry.status_code == 200, dry.text
    assert dry.json()["total_entries"] == 5
    assert dry.json()["backfills"][0] == {
        "logical_date": "2025-01-01T00:00:00Z",
        "partition_key": None,
        "partition_date": None,
    }

    created = await http.post(
        "/api/v2/backfills", json={**BODY, "dag_run_conf": {"a": 1}, "run_on_latest_version": True}
    )
    assert created.status_code == 200, created.text
    backfill = created.json()
    assert set(backfill) == RESPONSE_KEYS
    assert backfill["dag_run_conf"] == {"a": 1} and backfill["completed_at"] is None
    assert (backfill["from_date"], backfill["reprocess_behavior"]) == ("2025-01-01T00:00:00Z", "none")
    sql.execute("SELECT max_active_runs, dag_run_conf FROM backfill")
    assert sql.fetchall() == [(2, {"a": 1})]

    again = await http.post("/api/v2/backfills", json=BODY)
    assert again.status_code == 409
    assert again.json() == {"detail": f"There is already a running backfill for dag {THREE}"}

    bid = backfill["id"]
    assert (await http.get(f"/api/v2/backfills/{bid}")).json()["id"] == bid
    listed = await http.get("/api/v2/backfills", params={"dag_id": THREE, "order_by": "-id", "limit": 10})
    assert listed.json()["total_entries"] == 1
    assert [b["id"] for b in listed.json()["backfills"]] == [bid]
    assert (await http.put(f"/api/v2/backfills/{bid}/pause")).json()["is_paused"] is True
    assert (await http.put(f"/api/v2/backfills/{bid}/pause")).status_code == 200  # idempotent
    assert (await http.put(f"/api/v2/backfills/{bid}/unpause")).json()["is_paused"] is False
    cancelled = await http.put(f"/api/v2/backfills/{bid}/cancel")
    assert cancelled.json()["completed_at"] is not None
    for action in ("pause", "unpause", "cancel"):
        late = await http.put(f"/api/v2/backfills/{bid}/{action}")
        assert (late.status_code, late.json()) == (409, {"detail": "Backfill is already completed."})


async def test_airflow_routes_refuse_bad_input(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    async def post(body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return await http.post("/api/v2/backfills", **kwargs)

    extra = await post({**BODY, "mode": "eager"})
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["type"] == "extra_forbidden"
    assert extra.json()["detail"][0]["loc"] == ["body", "mode"]

    cases: list[tuple[str, httpx.Response, int]] = [
        ("dag_id not a string", await post({**BODY, "dag_id": 5}), 400),
        ("conf not an object", await post({**BODY, "dag_run_conf": [1]}), 422),
        ("bad date", await post({**BODY, "from_date": "2025-02-30"}), 422),
        ("bad offset", await post({**BODY, "from_date": "2025-01-01T00:00:00+25:00"}), 422),
        ("wrong type", await post({**BODY, "max_active_runs": "lots"}), 422),
        ("max_active_runs < 1", await post({**BODY, "max_active_runs": 0}), 422),
        ("huge max_active_runs", await post({**BODY, "max_active_runs": 10**30}), 422),
        ("reversed range", await post({**BODY, "from_date": "2025-02-01T00:00:00Z"}), 422),
        ("future range", await post({**BODY, "from_date": "2999-01-01", "to_date": "2999-01-02"}), 422),
        ("out of range", await post({**BODY, "from_date": "0001-01-01T00:00:00+01:00"}), 422),
        ("unknown dag", await post({**BODY, "dag_id": "1; DROP TABLE dag_run"}), 404),
        ("no body", await post(), 422),
        (
            "malformed",
            await post(content=b'{"dag_id": "x",', headers={"content-type": "application/json"}),
            422,
        ),
        ("oversized", await post(content=b"[" + b"0," * 40_000 + b"0]"), 413),
        ("bad id", await http.get("/api/v2/backfills/1%3BDROP"), 422),
        ("negative id", await http.put("/api/v2/backfills/-1/pause"), 422),
        ("huge id", await http.get("/api/v2/backfills/99999999999999"), 404),
        ("unknown id", await http.put("/api/v2/backfills/424242/cancel"), 404),
        ("list without dag_id", await http.get("/api/v2/backfills"), 422),
        (
            "bad order_by",
            await http.get("/api/v2/backfills", params={"dag_id": THREE, "order_by": "name"}),
            400,
        ),
        ("bad limit", await http.get("/api/v2/backfills", params={"dag_id": THREE, "limit": "-1"}), 422),
    ]
    for label, response, status in cases:
        assert response.status_code == status, (label, response.text)
        assert "detail" in response.json(), label
    assert cases[0][1].json() == {"detail": "'dag_id' must be a string"}
    assert (await http.get("/api/v2/backfills/424242")).json() == {"detail": "Backfill not found"}
    assert count_backfills(sql) == 0

    # A huge range is no error: it is planned lazily, clamped to the DAG's start and today.
    # (Its ends lie in the supported dates, 1900-01-01 to 9000-01-01: issue 10.)
    huge = await http.post(
        "/api/v2/backfills/dry_run", json={**BODY, "from_date": "1900-01-01", "to_date": "8999-12-31"}
    )
    assert huge.status_code == 200
    assert 5 < huge.json()["total_entries"] <= 10_000
    beyond = await http.post(
        "/api/v2/backfills/dry_run", json={**BODY, "from_date": "0001-01-01", "to_date": "9999-12-31"}
    )
    assert beyond.status_code == 422 and "from_date" in beyond.json()["detail"], beyond.text
    assert count_backfills(sql) == 0


@pytest.fixture
def served(gateway: Gateway) -> Iterator[str]:
    """The gateway on a free loopback port, served by uvicorn in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(gateway, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: uv.started, timeout=30, message="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def drive_with_official_client(host: str) -> dict[str, Any]:
    """Create, dry-run, list, get, pause, unpause and cancel with apache-airflow-client."""
    configuration = airflow_client.Configuration(host=host)
    with airflow_client.ApiClient(configuration) as api_client:
        api = airflow_client.BackfillApi(api_client)
        body = airflow_client.BackfillPostBody(
            dag_id=THREE,
            from_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            to_date=dt.datetime(2025, 1, 5, tzinfo=dt.UTC),
            max_active_runs=2,
            reprocess_behavior=airflow_client.ReprocessBehavior.NONE,
            dag_run_conf={"source": "client"},
        )
        dry = api.create_backfill_dry_run(body)
        created = api.create_backfill(body)
        listed = api.list_backfills(dag_id=THREE, order_by=["-id"])
        got = api.get_backfill(created.id)
        paused = api.pause_backfill(created.id)
        unpaused = api.unpause_backfill(created.id)
        cancelled = api.cancel_backfill(created.id)
        try:
            api.get_backfill(999_999)
        except airflow_client.ApiException as exc:
            missing = (exc.status, exc.body)
        return {
            "dry": [r.logical_date for r in dry.backfills],
            "created": created,
            "listed": [b.id for b in listed.backfills],
            "total": listed.total_entries,
            "got": got,
            "paused": paused.is_paused,
            "unpaused": unpaused.is_paused,
            "cancelled": cancelled.completed_at,
            "missing": missing,
        }


async def test_official_airflow_client_drives_the_gateway(
    served: str, sql: psycopg2.extensions.cursor
) -> None:
    out = await asyncio.to_thread(drive_with_official_client, served)
    assert out["dry"][0] == dt.datetime(2025, 1, 1, tzinfo=dt.UTC) and len(out["dry"]) == 5
    created = out["created"]
    assert (created.dag_id, created.max_active_runs, created.dag_run_conf) == (THREE, 2, {"source": "client"})
    assert out["listed"] == [created.id] and out["total"] == 1
    assert out["got"].id == created.id
    assert (out["paused"], out["unpaused"]) == (True, False)
    assert out["cancelled"] is not None
    assert out["missing"][0] == 404 and "Backfill not found" in out["missing"][1]
    sql.execute("SELECT completed_at IS NOT NULL FROM backfill WHERE id = %s", (created.id,))
    assert sql.fetchone() == (True,)


async def test_bounds_with_a_utc_offset_name_runs_as_airflow_does(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    """``/v1`` and ``/api/v2`` keep the offset a bound was written in: a run on it is named in it."""

    def run_ids(backfill_id: int) -> list[str]:
        sql.execute("SELECT run_id FROM dag_run WHERE backfill_id = %s ORDER BY logical_date", (backfill_id,))
        return [r[0] for r in sql.fetchall()]

    v1 = await http.post(
        "/v1/backfills",
        json={
            "dagId": THREE,
            "fromDate": "2025-01-01T05:30:00+05:30",  # 2025-01-01T00:00Z: the first tick
            "toDate": "2025-01-02T21:00:00-03:00",
            "mode": "MODE_EAGER",
        },
    )
    assert v1.status_code == 200, v1.text
    backfill = v1.json()["backfill"]
    assert (backfill["fromDateUtcOffsetSeconds"], backfill["toDateUtcOffsetSeconds"]) == (19800, -10800)
    assert backfill["fromDate"] == "2025-01-01T00:00:00Z"  # a Timestamp: the instant, in UTC
    assert run_ids(int(backfill["id"])) == [
        "backfill__2025-01-01T05:30:00+05:30",
        "backfill__2025-01-02T00:00:00+00:00",
        "backfill__2025-01-03T00:00:00+00:00",
    ]
    got = await http.get(f"/v1/{backfill['name']}")
    assert got.json()["backfill"]["fromDateUtcOffsetSeconds"] == 19800  # stored with the backfill
    assert (await http.post(f"/v1/{backfill['name']}:cancel")).status_code == 200

    v2 = await http.post(
        "/api/v2/backfills",
        json={**BODY, "from_date": "2025-02-01T09:00:00+09:00", "to_date": "2025-02-02T00:00:00Z"},
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["from_date"] == "2025-02-01T00:00:00Z"  # Airflow's answer: the stored instant
    assert run_ids(v2.json()["id"]) == [
        "backfill__2025-02-01T09:00:00+09:00",
        "backfill__2025-02-02T00:00:00+00:00",
    ]

    refused = await http.post(
        "/v1/backfills",
        json={
            "dagId": THREE,
            "fromDate": base.RANGE["from_date"],
            "toDate": base.RANGE["to_date"],
            "fromDateUtcOffsetSeconds": 7,
        },
    )
    assert refused.status_code == 400
    assert base.violations(refused.json()) == ["backfill.from_date_utc_offset_seconds"]
