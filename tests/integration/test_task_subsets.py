"""Task subsets on every surface (the contract of ``Backfill.task_selection``): gRPC through
``/v1``, Airflow's ``/api/v2`` (a sidecar extension), the CLI; the rows they write; refusals
that write nothing; and a reprocess that clears only the selected tasks.

``sidecar_e2e_three`` is ``first >> second >> third``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg2.extensions
import pytest

from tests.integration.test_cli import cli
from tests.integration.test_gateway import RANGE, THREE, count_backfills, violations
from tests.support.fixtures import AirflowDatabase
from tests.support.processes import start_sidecar


def _body(selection: dict[str, Any]) -> dict[str, Any]:
    return {
        "dagId": THREE,
        "fromDate": RANGE["from_date"],
        "toDate": "2025-01-02T00:00:00Z",
        "maxActiveRuns": 1,
        "taskSelection": selection,
    }


def _ti_states(sql: psycopg2.extensions.cursor) -> list[tuple[str, str | None, int]]:
    sql.execute(
        "SELECT task_id, state, count(*) FROM task_instance WHERE dag_id = %s GROUP BY task_id, state"
        " ORDER BY task_id",
        (THREE,),
    )
    return [tuple(row) for row in sql.fetchall()]  # type: ignore[misc]


async def test_v1_writes_excluded_tasks_removed_and_shows_the_selection(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    dry = await http.post(
        "/v1/backfills", params={"validateOnly": "true"}, json=_body({"taskIds": ["second"]})
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["backfill"]["taskSelection"]["selectedTaskIds"] == ["second"]
    assert count_backfills(sql) == 0

    created = await http.post("/v1/backfills", json=_body({"taskRegex": "^sec"}))
    assert created.status_code == 200, created.text
    backfill = created.json()["backfill"]
    assert backfill["taskSelection"] == {
        "taskRegex": "^sec",
        "taskIds": [],
        "includeUpstream": False,
        "includeDownstream": False,
        "selectedTaskIds": ["second"],
    }
    # Excluded tasks: one removed instance each per run, so the scheduler has nothing to add.
    assert _ti_states(sql) == [("first", "removed", 2), ("second", None, 2), ("third", "removed", 2)]
    sql.execute("SELECT selected_task_ids FROM airflow_sidecar.sidecar_task_selection")
    assert sql.fetchall() == [(["second"],)]

    got = (await http.get(f"/v1/{backfill['name']}")).json()["backfill"]
    assert got["taskSelection"]["selectedTaskIds"] == ["second"]
    listed = (await http.get("/v1/backfills", params={"dagId": THREE})).json()["backfills"]
    assert listed[0]["taskSelection"]["taskRegex"] == "^sec"


async def test_widened_selection_in_dag_order(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    created = await http.post("/v1/backfills", json=_body({"taskIds": ["second"], "includeDownstream": True}))
    assert created.status_code == 200, created.text
    assert created.json()["backfill"]["taskSelection"]["selectedTaskIds"] == ["second", "third"]
    assert _ti_states(sql) == [("first", "removed", 2), ("second", None, 2), ("third", None, 2)]


@pytest.mark.parametrize(
    ("selection", "field", "words"),
    [
        ({"taskRegex": "(unclosed"}, "backfill.task_selection.task_regex", "not a valid regular expression"),
        ({"taskRegex": "^nothing$"}, "backfill.task_selection.task_regex", "matches none"),
        ({"taskIds": ["second", "nope"]}, "backfill.task_selection.task_ids", "'nope'"),
        ({"taskRegex": "x", "taskIds": ["second"]}, "backfill.task_selection", "not both"),
        ({"includeUpstream": True}, "backfill.task_selection", "needs task_regex or task_ids"),
        ({"taskRegex": "a" * 1001}, "backfill.task_selection.task_regex", "longer than 1000"),
    ],
)
async def test_bad_selections_are_refused_naming_the_field_and_write_nothing(
    http: httpx.AsyncClient,
    sql: psycopg2.extensions.cursor,
    selection: dict[str, Any],
    field: str,
    words: str,
) -> None:
    for params in ({"validateOnly": "true"}, {}):
        refused = await http.post("/v1/backfills", params=params, json=_body(selection))
        assert refused.status_code == 400, refused.text
        assert violations(refused.json()) == [field]
        assert words in refused.json()["error"]["message"]
    assert count_backfills(sql) == 0
    sql.execute("SELECT count(*) FROM dag_run WHERE dag_id = %s", (THREE,))
    assert sql.fetchone() == (0,)


async def test_airflow_api_v2_takes_the_extension(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    body = {
        "dag_id": THREE,
        "from_date": RANGE["from_date"],
        "to_date": "2025-01-01T00:00:00Z",
        "task_selection": {"task_regex": "^(first|third)$"},
    }
    created = await http.post("/api/v2/backfills", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["task_selection"] == {
        "task_regex": "^(first|third)$",
        "task_ids": [],
        "include_upstream": False,
        "include_downstream": False,
        "selected_task_ids": ["first", "third"],
    }
    assert _ti_states(sql) == [("first", None, 1), ("second", "removed", 1), ("third", None, 1)]
    shown = (await http.get(f"/api/v2/backfills/{created.json()['id']}")).json()
    assert shown["task_selection"]["selected_task_ids"] == ["first", "third"]
    refused = await http.post(
        "/api/v2/backfills/dry_run", json={**body, "task_selection": {"task_ids": ["nope"]}}
    )
    assert refused.status_code in (400, 422), refused.text
    assert "nope" in refused.text


async def test_a_backfill_without_a_subset_shows_none(http: httpx.AsyncClient) -> None:
    body = {"dag_id": THREE, "from_date": RANGE["from_date"], "to_date": "2025-01-01T00:00:00Z"}
    created = await http.post("/api/v2/backfills", json=body)
    assert created.status_code == 200, created.text
    assert "task_selection" not in created.json()
    got = (await http.get(f"/v1/backfills/{created.json()['id']}")).json()["backfill"]
    assert "taskSelection" not in got


async def test_reprocess_clears_only_the_selected_tasks(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    # A finished, failed run of 2025-01-01 whose tasks all ran.
    sql.execute(
        "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status)"
        " VALUES (%s, 'scheduled__1', '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00', 'failed',"
        " 'scheduled', 0, 'not_started')",
        (THREE,),
    )
    for task_id, state in (("first", "success"), ("second", "failed"), ("third", "upstream_failed")):
        sql.execute(
            "INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, state, try_number, max_tries,"
            " pool, pool_slots, queue, priority_weight, span_status, dag_version_id)"
            " SELECT gen_random_uuid(), %s, %s, 'scheduled__1', -1, %s, 1, 0, 'default_pool', 1, 'default',"
            " 1, 'not_started', id FROM dag_version WHERE dag_id = %s ORDER BY version_number DESC LIMIT 1",
            (task_id, THREE, state, THREE),
        )
    body = {
        **_body({"taskIds": ["second"]}),
        "toDate": RANGE["from_date"],
        "reprocessBehavior": "REPROCESS_BEHAVIOR_FAILED",
    }
    created = await http.post("/v1/backfills", json=body)
    assert created.status_code == 200, created.text
    # Only "second" was archived and reset; "first" and "third" keep what they were (Airflow's
    # clear of a subset), so the run's state stays truthful about them.
    assert _ti_states(sql) == [("first", "success", 1), ("second", None, 1), ("third", "upstream_failed", 1)]
    sql.execute("SELECT task_id FROM task_instance_history WHERE dag_id = %s", (THREE,))
    assert sql.fetchall() == [("second",)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli("backfill", *args)


def test_cli_flags_reach_the_server(clean_db: AirflowDatabase, tmp_path: Path) -> None:
    process, target = start_sidecar(clean_db.asyncpg_url, tmp_path)
    try:
        common = [
            "--target",
            target,
            "create",
            "--dag-id",
            THREE,
            "--from-date",
            "2025-01-01",
            "--to-date",
            "2025-01-02",
        ]
        dry = _cli(*common, "--dry-run", "--task-id", "first", "--task-id", "third", "--include-upstream")
        assert dry.returncode == 0, dry.stderr
        assert "runs only 3 tasks: first, second, third" in dry.stderr
        both = _cli(*common, "--task-regex", "x", "--task-id", "first")
        assert both.returncode == 2 and "not allowed with argument" in both.stderr
        alone = _cli(*common, "--include-downstream")
        assert alone.returncode == 2 and "need --task-regex or --task-id" in alone.stderr
        bad = _cli(*common, "--task-regex", "(")
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "task_regex" in bad.stderr
    finally:
        process.stop()
