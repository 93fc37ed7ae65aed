"""The gateway's request hardening (issue 10): JSON-only bodies, a size limit, read timeouts.

Content type and size run in-process (httpx.ASGITransport); the slow-header and slow-body
attacks need a real server, so the gateway is served by uvicorn on a loopback port (with the
same header-timeout protocol as ``airflow-sidecar gateway``) and attacked with raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from sidecar.gateway import Gateway, GatewayConfig, create_app
from sidecar.gateway._header_timeout import header_timeout_protocol
from sidecar.server import SidecarServer

THREE = "sidecar_e2e_three"
V1_BODY = {"dagId": THREE, "fromDate": "2025-01-01T00:00:00Z", "toDate": "2025-01-03T00:00:00Z"}
V2_BODY = {"dag_id": THREE, "from_date": "2025-01-01T00:00:00Z", "to_date": "2025-01-03T00:00:00Z"}
TIMEOUT = 0.5
"""Header and body timeout of the served gateway, in seconds."""


async def test_only_json_bodies(http: httpx.AsyncClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {"content-type": content_type} if content_type else {}
        v1 = await http.post(
            "/v1/backfills", params={"validateOnly": "true"}, content=json.dumps(V1_BODY), headers=headers
        )
        assert v1.status_code == 415, (content_type, v1.text)
        assert v1.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert "application/json" in v1.json()["error"]["message"]
        v2 = await http.post("/api/v2/backfills/dry_run", content=json.dumps(V2_BODY), headers=headers)
        assert v2.status_code == 415, (content_type, v2.text)
        assert set(v2.json()) == {"detail"}
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        ok = await http.post(
            "/api/v2/backfills/dry_run", content=json.dumps(V2_BODY), headers={"content-type": content_type}
        )
        assert ok.status_code == 200, (content_type, ok.text)
    # No body, no content type needed (custom methods without a body).
    listed = await http.get("/v1/backfills", headers={"content-type": "text/plain"})
    assert listed.status_code == 200, listed.text


async def test_body_size_limit(http: httpx.AsyncClient, gateway: Gateway) -> None:
    big = b'{"x": "' + b"a" * gateway.config.max_body_bytes + b'"}'
    headers = {"content-type": "application/json"}
    v1 = await http.post("/v1/backfills", content=big, headers=headers)
    v2 = await http.post("/api/v2/backfills", content=big, headers=headers)
    assert (v1.status_code, v2.status_code) == (413, 413)
    assert v1.json()["error"]["code"] == 413
    assert "larger than" in v2.json()["detail"]
    assert v1.headers["connection"] == "close"


async def test_infinite_max_active_runs_is_airflows_422(http: httpx.AsyncClient) -> None:
    raw = json.dumps(V2_BODY)[:-1] + ', "max_active_runs": 1e400}'
    response = await http.post("/api/v2/backfills", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "max_active_runs"]
    assert detail["type"] == "finite_number"
    assert detail["input"] == "inf"
    v1_raw = json.dumps(V1_BODY)[:-1] + ', "maxActiveRuns": 1e400}'
    v1 = await http.post("/v1/backfills", content=v1_raw, headers={"content-type": "application/json"})
    assert v1.status_code == 400, v1.text
    assert v1.json()["error"]["status"] == "INVALID_ARGUMENT"
    for conf in ('{"a": 1e400}', '{"a": NaN}'):
        body = json.dumps(V2_BODY)[:-1] + f', "dag_run_conf": {conf}}}'
        refused = await http.post(
            "/api/v2/backfills", content=body, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 422, refused.text
        assert "detail" in refused.json()


@pytest.fixture
def served(server: SidecarServer) -> Iterator[tuple[str, int]]:
    """The gateway on a free loopback port, with TIMEOUT seconds for headers and for bodies."""
    app = create_app(GatewayConfig(target=f"127.0.0.1:{server.port}", body_timeout=TIMEOUT))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", http=header_timeout_protocol(TIMEOUT))
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _read_until_closed(conn: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and how long that took."""
    started = time.monotonic()
    received = b""
    conn.settimeout(limit)
    while time.monotonic() - started < limit:
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    raise AssertionError(f"the connection stayed open for {limit} s; got {received!r}")


def test_slow_headers_are_cut_off(served: tuple[str, int]) -> None:
    started = time.monotonic()
    with socket.create_connection(served, timeout=5) as conn:
        conn.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):  # a header byte every 0.1 s: never complete within the timeout
            try:
                conn.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([conn], [], [], 0.1)[0]:  # the server answered or closed
                break
        received, _ = _read_until_closed(conn, limit=5)
    assert time.monotonic() - started < TIMEOUT + 2
    if received:  # the 408 may be lost to a reset, since the client kept writing
        assert received.startswith(b"HTTP/1.1 408"), received
        assert json.loads(received.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 408


def test_idle_connection_is_closed(served: tuple[str, int]) -> None:
    with socket.create_connection(served, timeout=5) as conn:
        received, took = _read_until_closed(conn, limit=5)
    assert received == b""
    assert took < TIMEOUT + 2


def test_slow_body_gets_408(served: tuple[str, int]) -> None:
    body = json.dumps(V2_BODY).encode()
    head = (
        b"POST /api/v2/backfills/dry_run HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
    )
    with socket.create_connection(served, timeout=5) as conn:
        conn.sendall(head + body[:10])
        received, took = _read_until_closed(conn, limit=5)
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"connection: close" in received.lower()
    assert json.loads(received.split(b"\r\n\r\n", 1)[1]) == {
        "detail": f"request body not received within {TIMEOUT:g} seconds"
    }
    assert took < TIMEOUT + 2


async def test_prompt_requests_still_served(served: tuple[str, int]) -> None:
    """Keep-alive works: the header clock restarts for each request on a connection."""
    async with httpx.AsyncClient(base_url=f"http://{served[0]}:{served[1]}") as client:
        for _ in range(3):
            assert (await client.get("/openapi.json")).status_code == 200
            dry = await client.post("/api/v2/backfills/dry_run", json=V2_BODY)
            assert dry.status_code == 200, dry.text
        await asyncio.sleep(TIMEOUT / 2)
        assert (await client.get("/v1/backfills")).status_code == 200
