"""Logs escape what callers send (issue 10): a newline in a DAG id cannot forge a log line.

A real server (JWT auth and a TOML policy, on the real schema) logs through the handler that
``airflow-sidecar serve`` installs (:func:`sidecar.observability.configure_logging`), in text
and in JSON. Callers send DAG ids holding a line break followed by a fake record: one is refused
by the policy (the denial is logged with the DAG id), one reaches the database and fails there
(the error and its traceback are logged). Every line of the text log must either start a real
record or be an indented traceback line, and every line of the JSON log must be one object.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import jwt
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.auth import AuthConfig
from sidecar.observability import configure_logging, log_context
from sidecar.server import SidecarServer
from tests.integration.conftest import running_server
from tests.security.test_errors_leak import create_request
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase

FORGED = "2099-01-01 00:00:00,000 ERROR sidecar.forged: pwned"
#: Sent as DAG ids: each tries to start a line of its own.
HOSTILE_DAG_IDS = (
    f"x\n{FORGED}",
    f"x\r\n{FORGED}",
    f"x\x00\n{FORGED}",
    f"x\u2028{FORGED}",
    f"x\x1b[2K\r{FORGED}",
)
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
POLICY = """
[[rule]]
principals = ["alice"]
dags = ["sidecar_e2e_*"]
actions = ["*"]

[[rule]]
principals = ["admin"]
dags = ["*"]
actions = ["*"]
"""


def bearer(subject: str) -> tuple[tuple[str, str]]:
    now = int(time.time())
    claims = {"sub": subject, "aud": "apache-airflow", "iat": now, "exp": now + 3600}
    return (("authorization", f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS512')}"),)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger (handlers, level) that ``configure_logging`` replaces."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
async def policed_server(clean_db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[SidecarServer]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    auth = AuthConfig(jwt_secret=JWT_SECRET, policy_file=policy)
    async with running_server(clean_db, auth=auth) as srv:
        yield srv


async def provoke(server: SidecarServer) -> None:
    """Hostile DAG ids: refused by the policy (alice), and sent to the database (admin)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = channel.unary_unary(
            "/airflow_sidecar.v1.BackfillService/CreateBackfill",
            request_serializer=pb.CreateBackfillRequest.SerializeToString,
            response_deserializer=pb.CreateBackfillResponse.FromString,
        )
        for dag_id in HOSTILE_DAG_IDS:
            for who in ("alice", "admin"):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub(create_request(dag_id), metadata=bearer(who), timeout=30)
                assert refused.value.code() is not grpc.StatusCode.UNKNOWN
    with log_context(dag_id=HOSTILE_DAG_IDS[0], note="a b=c"):
        logging.getLogger("sidecar.test").warning("context of %s", HOSTILE_DAG_IDS[1])


async def test_text_log_cannot_be_forged(
    policed_server: SidecarServer, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "text")
    await provoke(policed_server)
    log = capsys.readouterr().err
    lines = log.split("\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        assert RECORD_START.match(line) or line.startswith("    "), repr(line)
        assert not line.startswith("2099"), repr(line)
        assert "\r" not in line and "\x00" not in line and "\x1b" not in line and "\u2028" not in line
    # The values are there, escaped, on the record's own line.
    denied = [line for line in lines if line.startswith(tuple("0123456789")) and " denied " in line]
    assert len(denied) == len(HOSTILE_DAG_IDS), log
    assert any(f"(dag x\\n{FORGED})" in line for line in denied), denied
    assert any("\\u2028" in line for line in denied)
    assert any(f'dag_id="x\\n{FORGED}" note="a b=c"' in line for line in lines), log


async def test_json_log_is_one_object_per_line(
    policed_server: SidecarServer, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    await provoke(policed_server)
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["message"] for r in records if "denied" in r["message"]} >= {
        f"denied /airflow_sidecar.v1.BackfillService/CreateBackfill to alice (dag {dag_id})"
        for dag_id in HOSTILE_DAG_IDS
    }
    assert any(r.get("dag_id") == HOSTILE_DAG_IDS[0] for r in records)
