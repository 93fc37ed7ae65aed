"""Airflow's own ``/api/v2`` backfill routes, answered by the sidecar through the plugin.

A real Airflow 3.3.2 api-server with the plugin (``on``) and one without it (``off``) share a
metadata database and a real sidecar. Creations through ``on`` are the sidecar's (its own
table has them, they are windowed, and its cancel semantics apply) and record Airflow's user;
every refusal is answered exactly as ``off`` (Airflow alone) answers it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import airflow_client.client as airflow_client
import grpc
import httpx
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.names import ON_BEHALF_OF_METADATA
from tests.plugin.conftest import DELEGATE, PluginStack, plugin_stack, sidecar_jwt
from tests.support.dags import metadata_query
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow, pytest.mark.e2e, pytest.mark.timeout(600)]

DAG = "sidecar_e2e_three"
#: What Airflow's UI sends from its "Run backfill" form (``toISOString()`` dates, all fields).
UI_FORM = {
    "dag_id": DAG,
    "dag_run_conf": {},
    "from_date": "2025-01-01T00:00:00.000Z",
    "max_active_runs": 1,
    "reprocess_behavior": "none",
    "run_backwards": False,
    "run_on_latest_version": True,
    "to_date": "2025-01-10T00:00:00.000Z",
}


@pytest.fixture(scope="module")
def stack(airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginStack]:
    with plugin_stack(airflow_db, tmp_path_factory.mktemp("plugin"), all_admins=False, with_off=True) as s:
        yield s


def _sql(stack: PluginStack, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return metadata_query(stack.db.env, sql, params)


def _backfills_without_sidecar_row(stack: PluginStack) -> list[tuple[Any, ...]]:
    return _sql(
        stack,
        "SELECT b.id FROM backfill b LEFT JOIN airflow_sidecar.sidecar_backfill s ON s.backfill_id = b.id"
        " WHERE s.backfill_id IS NULL",
    )


def _cancel(stack: PluginStack, backfill_id: int) -> httpx.Response:
    return httpx.put(
        f"{stack.on_url}/api/v2/backfills/{backfill_id}/cancel", headers=stack.headers("admin"), timeout=60
    )


def test_the_ui_form_creates_a_sidecar_backfill_as_airflows_user(stack: PluginStack) -> None:
    answer = httpx.post(
        f"{stack.on_url}/api/v2/backfills", json=UI_FORM, headers=stack.headers("admin"), timeout=60
    )
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert (created["dag_id"], created["dag_display_name"], created["max_active_runs"]) == (DAG, DAG, 1)
    assert (created["from_date"], created["to_date"]) == ("2025-01-01T00:00:00Z", "2025-01-10T00:00:00Z")
    assert created["is_paused"] is False and created["completed_at"] is None
    # The sidecar wrote it: its own row, Airflow's user as the triggering user, and windowed:
    # Airflow's _create_backfill writes all ten runs in its request, the sidecar a first window.
    rows = _sql(
        stack,
        "SELECT s.mode, s.planned_count, b.triggering_user_name FROM backfill b"
        " JOIN airflow_sidecar.sidecar_backfill s ON s.backfill_id = b.id WHERE b.id = %s",
        created["id"],
    )
    assert rows == [("windowed", 10, "admin")]
    (runs,) = _sql(stack, "SELECT count(*) FROM backfill_dag_run WHERE backfill_id = %s", created["id"])[0]
    assert 1 <= runs < 10
    assert _backfills_without_sidecar_row(stack) == []
    # Airflow's audit log still records the action, under Airflow's user.
    assert _sql(stack, "SELECT owner FROM log WHERE event = 'create_backfill'") == [("admin",)]
    # Cancel through Airflow's route is the sidecar's cancel: Airflow's own leaves it paused.
    cancelled = _cancel(stack, created["id"])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["completed_at"] is not None and cancelled.json()["is_paused"] is False
    assert _sql(stack, "SELECT owner FROM log WHERE event = 'cancel_backfill'") == [("admin",)]


def test_airflows_own_client_drives_the_sidecar(stack: PluginStack) -> None:
    configuration = airflow_client.Configuration(host=stack.on_url, access_token=stack.token("admin"))
    body = airflow_client.BackfillPostBody(
        dag_id=DAG,
        from_date=dt.datetime(2025, 2, 1, tzinfo=dt.UTC),
        to_date=dt.datetime(2025, 2, 28, tzinfo=dt.UTC),
        max_active_runs=2,
        reprocess_behavior=airflow_client.ReprocessBehavior.NONE,
        dag_run_conf={"source": "client"},
    )
    with airflow_client.ApiClient(configuration) as api_client:
        api = airflow_client.BackfillApi(api_client)
        dry = api.create_backfill_dry_run(body)
        created = api.create_backfill(body)
        paused = api.pause_backfill(created.id)
        unpaused = api.unpause_backfill(created.id)
        got = api.get_backfill(created.id)  # Airflow's own route: the plugin leaves reads alone
        cancelled = api.cancel_backfill(created.id)
    assert dry.total_entries == 28 and dry.backfills[0].logical_date == dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    assert (created.dag_id, created.dag_run_conf, created.max_active_runs) == (DAG, {"source": "client"}, 2)
    assert (paused.is_paused, unpaused.is_paused, got.id) == (True, False, created.id)
    assert cancelled.completed_at is not None and cancelled.is_paused is False
    rows = _sql(
        stack,
        "SELECT s.planned_count, s.phase, b.triggering_user_name FROM backfill b"
        " JOIN airflow_sidecar.sidecar_backfill s ON s.backfill_id = b.id WHERE b.id = %s",
        created.id,
    )
    assert rows == [(28, "cancelled", "admin")]
    assert _backfills_without_sidecar_row(stack) == []


def _both(stack: PluginStack, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
    answers = []
    for base in (stack.on_url, stack.off_url):
        answer = httpx.request(method, base + path, timeout=60, **kwargs)
        answers.append((answer.status_code, answer.json()))
    return answers[0], answers[1]


def test_refusals_are_airflows_own(stack: PluginStack) -> None:
    admin, viewer = stack.headers("admin"), stack.headers("viewer")
    good = {"dag_id": DAG, "from_date": "2025-03-01T00:00:00Z", "to_date": "2025-03-05T00:00:00Z"}
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/api/v2/backfills", {"json": good}, 401),
        ("POST", "/api/v2/backfills/dry_run", {"json": good}, 401),
        ("POST", "/api/v2/backfills", {"json": good, "headers": {"Authorization": "Bearer nonsense"}}, 403),
        ("POST", "/api/v2/backfills", {"json": good, "headers": viewer}, 403),
        ("POST", "/api/v2/backfills/dry_run", {"json": good, "headers": viewer}, 403),
        ("POST", "/api/v2/backfills", {"json": {**good, "dag_id": "no_such_dag"}, "headers": admin}, 404),
        (
            "POST",
            "/api/v2/backfills/dry_run",
            {"json": {**good, "dag_id": "no_such_dag"}, "headers": admin},
            404,
        ),
        (
            "POST",
            "/api/v2/backfills",
            {"json": {**good, "to_date": "2025-02-01T00:00:00Z"}, "headers": admin},
            422,
        ),
        ("POST", "/api/v2/backfills", {"json": {"dag_id": DAG, "from_date": "x"}, "headers": admin}, 422),
        ("POST", "/api/v2/backfills", {"json": {**good, "dag_id": 7}, "headers": admin}, 400),
        ("POST", "/api/v2/backfills", {"json": {**good, "surplus": 1}, "headers": admin}, 422),
        ("PUT", "/api/v2/backfills/2147483000/pause", {"headers": admin}, 404),
        ("PUT", "/api/v2/backfills/abc/cancel", {"headers": admin}, 422),
        ("PUT", "/api/v2/backfills/1/unpause", {}, 401),
    ]
    for method, path, kwargs, status in cases:
        on, off = _both(stack, method, path, **kwargs)
        assert on == off, (method, path, kwargs)
        assert on[0] == status, (method, path, on)

    # A second active backfill (409), a viewer steering it (403), a completed one (409).
    created = httpx.post(f"{stack.on_url}/api/v2/backfills", json=good, headers=admin, timeout=60)
    assert created.status_code == 200, created.text
    backfill_id = created.json()["id"]
    later = {**good, "from_date": "2025-04-01T00:00:00Z", "to_date": "2025-04-03T00:00:00Z"}
    on, off = _both(stack, "POST", "/api/v2/backfills", json=later, headers=admin)
    assert on == off == (409, {"detail": f"There is already a running backfill for dag {DAG}"})
    on, off = _both(stack, "PUT", f"/api/v2/backfills/{backfill_id}/pause", headers=viewer)
    assert on == off == (403, {"detail": "Forbidden"})
    assert _cancel(stack, backfill_id).status_code == 200
    for action in ("pause", "unpause", "cancel"):
        on, off = _both(stack, "PUT", f"/api/v2/backfills/{backfill_id}/{action}", headers=admin)
        assert on == off == (409, {"detail": "Backfill is already completed."})
    assert _backfills_without_sidecar_row(stack) == []


def test_only_a_delegate_may_speak_for_a_user(stack: PluginStack) -> None:
    request = pb.ListBackfillsRequest(page_size=1)
    with grpc.insecure_channel(stack.target) as channel:
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)

        def list_as(token: str, user: str | bytes | None) -> grpc.StatusCode:
            metadata: list[tuple[str, str | bytes]] = [("authorization", f"Bearer {token}")]
            if user is not None:
                metadata.append((ON_BEHALF_OF_METADATA, user if isinstance(user, bytes) else user.encode()))
            try:
                stub.ListBackfills(request, metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        delegate, plain = sidecar_jwt(DELEGATE, "delegate"), sidecar_jwt("plain")
        assert list_as(plain, None) == grpc.StatusCode.OK
        assert list_as(plain, "admin") == grpc.StatusCode.PERMISSION_DENIED
        assert list_as(delegate, "admin") == grpc.StatusCode.OK
        assert list_as(delegate, "") == grpc.StatusCode.PERMISSION_DENIED
        assert list_as(delegate, "zoë") == grpc.StatusCode.OK
        assert list_as(delegate, "a\x7fb") == grpc.StatusCode.PERMISSION_DENIED
        assert list_as(delegate, "x" * 513) == grpc.StatusCode.PERMISSION_DENIED
        assert list_as(delegate, b"\xff") == grpc.StatusCode.PERMISSION_DENIED


def test_sidecar_down_answers_503_after_airflows_checks(stack: PluginStack) -> None:
    stack.sidecar.stop()
    body = {"dag_id": DAG, "from_date": "2025-05-01T00:00:00Z", "to_date": "2025-05-03T00:00:00Z"}
    down = httpx.post(
        f"{stack.on_url}/api/v2/backfills", json=body, headers=stack.headers("admin"), timeout=60
    )
    assert down.status_code == 503
    detail = down.json()["detail"]
    assert "sidecar" in detail and stack.target in detail and "SIDECAR_PLUGIN_FALLBACK" in detail
    # Nothing fell back to Airflow's slow path, and Airflow still authenticates first.
    assert _sql(stack, "SELECT count(*) FROM backfill WHERE from_date >= '2025-05-01'") == [(0,)]
    assert httpx.post(f"{stack.on_url}/api/v2/backfills", json=body, timeout=60).status_code == 401
    viewer = httpx.post(
        f"{stack.on_url}/api/v2/backfills", json=body, headers=stack.headers("viewer"), timeout=60
    )
    assert viewer.status_code == 403
    # Reads are Airflow's own and keep working.
    listed = httpx.get(
        f"{stack.on_url}/api/v2/backfills", params={"dag_id": DAG}, headers=stack.headers("admin"), timeout=60
    )
    assert listed.status_code == 200 and listed.json()["total_entries"] == 3
