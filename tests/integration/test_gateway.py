"""The REST gateway in-process (httpx.ASGITransport) against a real gRPC server on the real schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import psycopg2.extensions

from sidecar.gateway import Gateway

THREE = "sidecar_e2e_three"
RANGE = {"from_date": "2025-01-01T00:00:00Z", "to_date": "2025-01-05T00:00:00Z"}


def reasons(body: dict[str, Any]) -> list[str]:
    return [d["reason"] for d in body["error"]["details"] if d["@type"].endswith("ErrorInfo")]


def violations(body: dict[str, Any]) -> list[str]:
    return [
        v["field"]
        for d in body["error"]["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["fieldViolations"]
    ]


def count_backfills(sql: psycopg2.extensions.cursor) -> int:
    sql.execute("SELECT count(*) FROM backfill")
    return int(sql.fetchone()[0])


async def test_v1_bindings_end_to_end(http: httpx.AsyncClient, sql: psycopg2.extensions.cursor) -> None:
    body = {"dagId": THREE, "fromDate": RANGE["from_date"], "toDate": RANGE["to_date"], "maxActiveRuns": 2}
    dry = await http.post("/v1/backfills", params={"validateOnly": "true"}, json=body)
    assert dry.status_code == 200, dry.text
    assert [r["sortOrdinal"] for r in dry.json()["plannedRuns"]] == [1, 2, 3, 4, 5]
    assert count_backfills(sql) == 0

    created = await http.post("/v1/backfills", params={"request_id": "r-1"}, json=body)
    assert created.status_code == 200, created.text
    backfill = created.json()["backfill"]
    assert backfill["name"] == f"backfills/{backfill['id']}"
    assert (backfill["state"], backfill["mode"], backfill["progress"]["planned"]) == (
        "STATE_ACTIVE",
        "MODE_WINDOWED",
        "5",
    )
    again = await http.post("/v1/backfills", params={"requestId": "r-1"}, json=body)
    assert again.json()["backfill"]["id"] == backfill["id"]
    assert count_backfills(sql) == 1

    name = backfill["name"]
    got = await http.get(f"/v1/{name}")
    assert got.json()["backfill"]["dagId"] == THREE
    listed = await http.get("/v1/backfills", params={"dag_id": THREE, "state": "STATE_ACTIVE"})
    assert [b["id"] for b in listed.json()["backfills"]] == [backfill["id"]]
    runs = await http.get(f"/v1/{name}/runs", params={"pageSize": 2})
    assert [r["sortOrdinal"] for r in runs.json()["runs"]] == [1, 2]
    more = await http.get(f"/v1/{name}/runs", params={"page_token": runs.json()["nextPageToken"]})
    assert [r["disposition"] for r in more.json()["runs"]][-1] == "DISPOSITION_PENDING"

    paused = await http.post(f"/v1/{name}:pause", json={})
    assert paused.json()["backfill"]["isPaused"] is True
    unpaused = await http.post(f"/v1/{name}:unpause")
    assert unpaused.json()["backfill"]["state"] == "STATE_ACTIVE"
    cancelled = await http.post(f"/v1/{name}:cancel", json={"terminateRunning": False})
    assert cancelled.json()["backfill"]["state"] == "STATE_CANCELLED"

    # WatchBackfill: newline-delimited JSON; a cancelled backfill gives one update and ends.
    async with http.stream("GET", f"/v1/{name}:watch") as watch:
        assert watch.status_code == 200
        assert watch.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in watch.aiter_lines() if line]
    assert [line["result"]["backfill"]["state"] for line in lines] == ["STATE_CANCELLED"]

    again_pause = await http.post(f"/v1/{name}:pause")
    assert again_pause.status_code == 400
    error = again_pause.json()["error"]
    assert (error["code"], error["status"]) == (400, "FAILED_PRECONDITION")
    assert reasons(again_pause.json()) == ["INVALID_STATE_TRANSITION"]


async def test_v1_errors_are_aip193_and_write_nothing(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    missing = await http.get("/v1/backfills/999")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
    assert reasons(missing.json()) == ["BACKFILL_NOT_FOUND"]

    watch_missing = await http.get("/v1/backfills/999:watch")
    assert watch_missing.status_code == 404

    good = {"dagId": THREE, "fromDate": RANGE["from_date"], "toDate": RANGE["to_date"]}
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("unknown body field", {"json": {**good, "colour": "red"}}, 400),
        ("wrong type", {"json": {**good, "maxActiveRuns": "many"}}, 400),
        ("bad date", {"json": {**good, "fromDate": "2025-13-45T00:00:00Z"}}, 400),
        ("bad offset", {"json": {**good, "fromDate": "2025-01-01T00:00:00+25:00"}}, 400),
        ("conf not an object", {"json": {**good, "dagRunConf": "[1, 2]"}}, 400),
        ("reversed range", {"json": {**good, "fromDate": "2025-02-01T00:00:00Z"}}, 400),
        ("malformed JSON", {"content": b'{"dagId": ', "headers": {"content-type": "application/json"}}, 400),
        ("body not an object", {"json": [1, 2]}, 400),
        ("NaN", {"content": b'{"dagId": NaN}', "headers": {"content-type": "application/json"}}, 400),
        ("unknown query", {"json": good, "params": {"drop": "table"}}, 400),
        ("bad query type", {"json": good, "params": {"validateOnly": "maybe"}}, 400),
        ("oversized", {"content": b"{" + b" " * 70_000 + b"}"}, 413),
        ("unknown dag", {"json": {**good, "dagId": "x'; DROP TABLE backfill; --"}}, 404),
    ]
    for label, kwargs, status in cases:
        response = await http.post("/v1/backfills", **kwargs)
        assert response.status_code == status, (label, response.text)
        error = response.json()["error"]
        assert error["code"] == status and error["message"], label
        assert ".." not in error["message"], (label, error["message"])
    bad_field = await http.post("/v1/backfills", json={**good, "dagRunConf": "[1, 2]"})
    assert violations(bad_field.json()) == ["backfill.dag_run_conf"]

    injected = await http.get("/v1/backfills/1%20OR%201=1")
    assert injected.status_code == 400
    assert violations(injected.json()) == ["name"]
    assert (await http.get("/v1/nothing")).status_code == 404
    assert (await http.delete("/v1/backfills")).status_code == 405
    assert count_backfills(sql) == 0


async def test_openapi_document_covers_every_binding(http: httpx.AsyncClient, gateway: Gateway) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    rpcs = {b.method.name for b in gateway.bindings}
    assert rpcs == {
        "CreateBackfill",
        "GetBackfill",
        "ListBackfills",
        "PauseBackfill",
        "UnpauseBackfill",
        "CancelBackfill",
        "ListBackfillRuns",
        "WatchBackfill",
    }
    assert rpcs <= operations
    assert {"create_backfill", "create_backfill_dry_run", "list_backfills", "get_backfill"} <= operations
    assert "/v1/backfills/{backfill}:pause" in document["paths"]
    backfill = document["components"]["schemas"]["airflow_sidecar.v1.Backfill"]
    assert backfill["properties"]["id"]["readOnly"] is True
    # Each end of the range is a date or a partition key (docs/partitions.md): neither is required alone.
    assert set(backfill["required"]) == {"dagId"}
    assert {"fromDate", "toDate", "fromPartitionKey", "toPartitionKey", "ordering"} <= set(
        backfill["properties"]
    )
    # The checked-in copy (scripts/gen_openapi.py) is the served document.
    assert json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text()) == document
