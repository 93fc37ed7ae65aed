"""The plugin's page in Airflow's UI, rendered by a real headless Chromium against a real api-server.

The page lists each backfill with its plan (planned, written, queued, running, succeeded,
failed, skipped) and a progress bar whose unwritten part shows what a windowed backfill has
not written yet. Screenshots land in ``tests/artifacts/plugin/`` (git-ignored).
"""

from __future__ import annotations

import html.parser
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.names import ON_BEHALF_OF_METADATA
from tests.plugin.conftest import DELEGATE, PluginStack, plugin_stack, sidecar_jwt
from tests.support.fixtures import AirflowDatabase
from tests.support.plugin import PROJECT_ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.airflow, pytest.mark.e2e, pytest.mark.timeout(600)]

DAG = "sidecar_e2e_three"
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts" / "plugin"
COUNTS = ("planned", "written", "queued", "running", "succeeded", "failed", "skipped")
CELLS = ("id", "dag", "state", "progress", *COUNTS, "range", "user")
HOSTILE_USER = '<img src=x onerror="document.title=1">&amp;'


def chromium() -> str:
    """Debian's ``chromium`` (``.ci/run`` installs it); without it the test cannot prove anything."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return found


def run_chromium(url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in headless Chromium; return what it prints (the DOM with ``--dump-dom``)."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        *extra,
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class _Rows(html.parser.HTMLParser):
    """The page's table rows: backfill id -> {cell class: text}, and the bar's segment classes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self._row: dict[str, Any] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "tr" and attributes.get("data-backfill-id"):
            self._row = {"segments": [], "cells": []}
            self.rows[attributes["data-backfill-id"] or ""] = self._row
        elif self._row is not None and tag == "td":
            self._cell = next(c for c in classes if c in CELLS)
            self._row["cells"].append(self._cell)
            self._row[self._cell] = ""
        elif self._row is not None and tag == "span" and "seg" in classes:
            self._row["segments"].append(next(c for c in classes if c != "seg"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self._row[self._cell] += data


@pytest.fixture(scope="module")
def stack(airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginStack]:
    with plugin_stack(airflow_db, tmp_path_factory.mktemp("page"), all_admins=True, with_off=False) as s:
        yield s


def _create_as(stack: PluginStack, user: str, start: str, end: str) -> int:
    """A backfill made straight over gRPC, delegated for ``user`` (any name: it is user data)."""
    begin, finish = Timestamp(), Timestamp()
    begin.FromJsonString(start)
    finish.FromJsonString(end)
    metadata = [
        ("authorization", f"Bearer {sidecar_jwt(DELEGATE, 'delegate')}"),
        (ON_BEHALF_OF_METADATA, user.encode()),
    ]
    with grpc.insecure_channel(stack.target) as channel:
        created = backfill_pb2_grpc.BackfillServiceStub(channel).CreateBackfill(
            pb.CreateBackfillRequest(
                backfill=pb.Backfill(dag_id=DAG, from_date=begin, to_date=finish, max_active_runs=2)
            ),
            metadata=metadata,
            timeout=60,
        )
    return int(created.backfill.id)


def _check_dom(dom: str, expected: dict[str, Any], *, first: str, second: str) -> None:
    parser = _Rows()
    parser.feed(dom)
    assert set(parser.rows) == set(expected)
    for backfill_id, row in parser.rows.items():
        for name in COUNTS:
            assert row[name] == str(expected[backfill_id][name]), (backfill_id, name, row)
        assert row["dag"] == DAG
    assert "unwritten" in parser.rows[second]["segments"]
    assert parser.rows[first]["state"] == "cancelled"
    # User data is text, never markup: the hostile name shows as typed and made no element.
    assert parser.rows[second]["user"] == HOSTILE_USER
    assert "<img" not in dom and "&lt;img src=x" in dom


def test_the_page_shows_each_backfill_plan_in_chromium(stack: PluginStack, tmp_path: Path) -> None:
    # One backfill through Airflow's own API (the plugin), cancelled; one windowed and running.
    first = httpx.post(
        f"{stack.on_url}/api/v2/backfills",
        json={"dag_id": DAG, "from_date": "2025-01-01T00:00:00Z", "to_date": "2025-01-10T00:00:00Z"},
        timeout=60,
    )
    assert first.status_code == 200, first.text
    cancel = httpx.put(f"{stack.on_url}/api/v2/backfills/{first.json()['id']}/cancel", timeout=60)
    assert cancel.status_code == 200, cancel.text
    second = _create_as(stack, HOSTILE_USER, "2025-02-01T00:00:00Z", "2025-03-31T00:00:00Z")

    plans = httpx.get(f"{stack.on_url}/sidecar/backfills.json", timeout=60)
    assert plans.status_code == 200, plans.text
    expected = {str(row["id"]): row for row in plans.json()["backfills"]}
    assert set(expected) == {str(first.json()["id"]), str(second)}
    windowed = expected[str(second)]
    assert windowed["planned"] == 59 and 0 < windowed["written"] < 59 and windowed["user"] == HOSTILE_USER

    # As served, and after the page's script has refreshed the table from its JSON.
    served = run_chromium(f"{stack.on_url}/sidecar/backfills", tmp_path / "profile", "--dump-dom")
    refreshed = run_chromium(
        f"{stack.on_url}/sidecar/backfills",
        tmp_path / "profile-js",
        "--dump-dom",
        "--virtual-time-budget=7000",
    )
    assert "data-refreshed=" not in served and "data-refreshed=" in refreshed
    for dom in (served, refreshed):
        _check_dom(dom, expected, first=str(first.json()["id"]), second=str(second))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page_shot = ARTIFACTS / "backfill-plans.png"
    run_chromium(
        f"{stack.on_url}/sidecar/backfills",
        tmp_path / "profile-shot",
        f"--screenshot={page_shot}",
        "--virtual-time-budget=5000",
    )
    assert page_shot.stat().st_size > 10_000
    # The same page inside Airflow's UI (its external view: the nav entry and an iframe).
    ui_shot = ARTIFACTS / "airflow-ui-backfill-plans.png"
    ui_url = f"{stack.on_url}/auth/token/login?next={stack.on_url}/plugin/sidecar-backfills"
    run_chromium(ui_url, tmp_path / "profile-ui", f"--screenshot={ui_shot}", "--virtual-time-budget=20000")
    assert ui_shot.stat().st_size > 10_000
