"""The plugin's page while a backfill's plan is still being counted, in a real headless Chromium.

A share of the runs written so far would draw a 100,000-run backfill just created as nearly
done: while ``progress.planned_is_counting`` the planned cell reads ``12+`` and the bar is a
hatched "counting" bar without segments, both as the server renders the table and as the
page's script redraws it from ``backfills.json`` rows. The page is loaded from a file with a
call of its own ``render`` appended (the rows the JSON route serves), so no api-server runs.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from tests.plugin.test_ui_page import COUNTS, _Rows, run_chromium

with warnings.catch_warnings():  # Airflow's api_fastapi loads starlette's test client, which warns
    warnings.simplefilter("ignore")
    from airflow_shim.plugin._page import _page_html, backfill_row

pytestmark = [pytest.mark.airflow]


def backfill(backfill_id: int, planned: int, counting: bool) -> pb.Backfill:
    b = pb.Backfill(id=backfill_id, dag_id="etl", state=pb.Backfill.STATE_ACTIVE)
    p = b.progress
    p.planned, p.written, p.queued, p.succeeded, p.planned_is_counting = planned, 12, 10, 2, counting
    return b


def bars(dom: str) -> dict[str, str]:
    """Each row's bar: its class and label."""
    found = re.findall(r'<tr data-backfill-id="(\d+)">.*?<div class="([^"]+)"[^>]*aria-label="([^"]*)"', dom)
    return {backfill_id: f"{cls} | {label}" for backfill_id, cls, label in found}


def check(dom: str) -> None:
    parser = _Rows()
    parser.feed(dom)
    counting, counted = parser.rows["7"], parser.rows["8"]
    assert counting["planned"] == "12+" and counted["planned"] == "100000"
    assert [counting[name] for name in COUNTS[1:]] == [counted[name] for name in COUNTS[1:]]
    assert counting["segments"] == []  # no share of a partial count
    assert counted["segments"] == ["succeeded", "queued", "unwritten"]
    shown = bars(dom)
    assert shown["7"] == "bar counting | 2/12+ done, 12 written, plan still being counted"
    assert shown["8"] == "bar | 2/100000 done, 12 written"


def test_the_page_marks_a_plan_still_being_counted(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        backfill_row(backfill(7, 12, True)),
        backfill_row(backfill(8, 100_000, False)),
    ]
    assert rows[0]["planned_is_counting"] is True and rows[1]["planned_is_counting"] is False
    page = _page_html(rows)
    check(page)  # as the server renders it

    served = tmp_path / "served.html"
    served.write_text(page)
    check(run_chromium(served.as_uri(), tmp_path / "profile", "--dump-dom"))
    # As the script draws it from the JSON rows (every five seconds on a live page): an empty
    # page, so that every row checked is one the script made.
    redrawn = tmp_path / "redrawn.html"
    call = f"<script>render({json.dumps(rows)});</script></body>"  # test data, not user data
    redrawn.write_text(_page_html([]).replace("</body>", call))
    check(run_chromium(redrawn.as_uri(), tmp_path / "profile-js", "--dump-dom"))
