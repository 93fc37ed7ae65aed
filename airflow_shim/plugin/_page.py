"""A page in Airflow's UI: every backfill with its plan and progress, windowed ones included.

Served by the plugin's own FastAPI app (``fastapi_apps``, mounted at ``/sidecar``) and shown
in Airflow's UI as an external view (an iframe under *Browse*). The user is Airflow's: the
same ``get_user`` dependency as Airflow's routes (the UI's session cookie or a bearer token),
and only backfills of DAGs the auth manager lets that user read are listed. The table is
rendered on the server (every value HTML-escaped: DAG ids and user names are user data) and
refreshed every few seconds by a little vanilla JavaScript that writes text, never markup.
A windowed backfill's bar shows its unwritten part: planned slots not yet written. While its
plan is still being counted (a long plan right after creation) the size is not known: the
planned count shows as a lower bound (``12+``) and the bar as "counting", not as a share of it.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from airflow_shim.plugin._calls import SidecarCalls
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.config import PluginSettings

#: Backfills listed (newest first).
PAGE_SIZE = 100
#: The counts each row shows, in order.
COUNTS = ("planned", "written", "queued", "running", "succeeded", "failed", "skipped")
_STATES = {
    pb.Backfill.STATE_ACTIVE: "active",
    pb.Backfill.STATE_PAUSED: "paused",
    pb.Backfill.STATE_COMPLETED: "completed",
    pb.Backfill.STATE_CANCELLED: "cancelled",
}


def _time(ts: Any) -> str:
    """A UTC time, shortened to the date at midnight."""
    if not (ts.seconds or ts.nanos):
        return ""
    value: dt.datetime = ts.ToDatetime(tzinfo=dt.UTC)
    return value.strftime("%Y-%m-%d") if value.time() == dt.time() else value.strftime("%Y-%m-%d %H:%M")


def backfill_row(b: pb.Backfill) -> dict[str, Any]:
    """One backfill as the page's JSON row."""
    row: dict[str, Any] = {
        "id": b.id,
        "dag_id": b.dag_id,
        "state": _STATES.get(b.state, "unknown"),
        "from_date": _time(b.from_date),
        "to_date": _time(b.to_date),
        "created": _time(b.create_time),
        "user": b.triggering_user_name,
    }
    row.update({name: int(getattr(b.progress, name)) for name in COUNTS})
    row["planned_is_counting"] = b.progress.planned_is_counting
    return row


def _segments(row: dict[str, Any]) -> list[tuple[str, float]]:
    """The progress bar's parts as (class, percent of the plan); none while the plan is counted."""
    if row["planned_is_counting"]:  # a share of a partial count would show it nearly done
        return []
    planned = max(int(row["planned"]), 1)
    parts = [(name, int(row[name])) for name in ("succeeded", "failed", "running", "queued", "skipped")]
    shown = sum(count for _, count in parts)
    parts.append(("written-other", max(int(row["written"]) - shown, 0)))
    parts.append(("unwritten", max(int(row["planned"]) - max(int(row["written"]), shown), 0)))
    return [(name, 100.0 * count / planned) for name, count in parts if count > 0]


def _row_html(row: dict[str, Any]) -> str:
    e = html.escape
    bar = "".join(
        f'<span class="seg {e(name)}" style="width:{width:.3f}%" title="{e(name)}"></span>'
        for name, width in _segments(row)
    )
    done = row["succeeded"] + row["failed"] + row["skipped"]
    counting = bool(row["planned_is_counting"])
    planned = f"{row['planned']}+" if counting else str(row["planned"])
    label = f"{done}/{planned} done, {row['written']} written" + (
        ", plan still being counted" if counting else ""
    )
    shown = {**{name: str(row[name]) for name in COUNTS}, "planned": planned}
    cells = [
        f'<td class="num id">{e(str(row["id"]))}</td>',
        f'<td class="dag">{e(row["dag_id"])}</td>',
        f'<td class="state {e(row["state"])}">{e(row["state"])}</td>',
        f'<td class="progress"><div class="bar{" counting" if counting else ""}" role="img" '
        f'aria-label="{e(label)}" title="{e(label)}">{bar}</div></td>',
        *(f'<td class="num {name}">{e(shown[name])}</td>' for name in COUNTS),
        f'<td class="range">{e(row["from_date"])} &rarr; {e(row["to_date"])}</td>',
        f'<td class="user" title="{e(row["user"])}">{e(row["user"])}</td>',
    ]
    return f'<tr data-backfill-id="{e(str(row["id"]))}">{"".join(cells)}</tr>'


_STYLE = """
body{font:13px system-ui,sans-serif;margin:16px;color:#1a202c}
h1{font-size:18px;margin:0 0 12px}
table{border-collapse:collapse;width:100%}
th,td{padding:6px 6px;border-bottom:1px solid #e2e8f0;text-align:left;white-space:nowrap}
td.user{max-width:160px;overflow:hidden;text-overflow:ellipsis}
th{font-weight:600;background:#f7fafc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.dag{font-family:ui-monospace,monospace}
.bar{display:flex;width:180px;height:14px;background:repeating-linear-gradient(45deg,#edf2f7,#edf2f7 4px,#fff 4px,#fff 8px);border:1px solid #cbd5e0;border-radius:3px;overflow:hidden}
.seg{display:block;height:100%}
.seg.succeeded{background:#38a169}.seg.failed{background:#e53e3e}.seg.running{background:#3182ce}
.seg.queued{background:#a0aec0}.seg.skipped{background:#d6bcfa}.seg.written-other{background:#718096}
.seg.unwritten{background:transparent}
.bar.counting{background:repeating-linear-gradient(45deg,#fefcbf,#fefcbf 4px,#fff 4px,#fff 8px);border-color:#d69e2e}
.legend i.counting{background:repeating-linear-gradient(45deg,#f6e05e,#f6e05e 2px,#fff 2px,#fff 4px);border:1px solid #d69e2e}
.legend i.unwritten{background:repeating-linear-gradient(45deg,#cbd5e0,#cbd5e0 2px,#fff 2px,#fff 4px);border:1px solid #cbd5e0}
.legend span{margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.empty{color:#718096}
"""

_SCRIPT = """
const COUNTS = %s;
function seg(cls, pct) { const s = document.createElement('span'); s.className = 'seg ' + cls;
  s.style.width = pct.toFixed(3) + '%%'; s.title = cls; return s; }
function render(rows) {
  const body = document.getElementById('rows'); body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement('tr'); tr.dataset.backfillId = String(r.id);
    const cell = (text, cls) => { const td = document.createElement('td'); td.textContent = String(text);
      if (cls) td.className = cls; tr.appendChild(td); };
    cell(r.id, 'num id'); cell(r.dag_id, 'dag'); cell(r.state, 'state ' + r.state);
    const td = document.createElement('td'); td.className = 'progress';
    const bar = document.createElement('div'); bar.className = r.planned_is_counting ? 'bar counting' : 'bar';
    const plannedText = r.planned_is_counting ? r.planned + '+' : String(r.planned);
    const done = r.succeeded + r.failed + r.skipped;
    bar.title = done + '/' + plannedText + ' done, ' + r.written + ' written'
      + (r.planned_is_counting ? ', plan still being counted' : '');
    bar.setAttribute('role', 'img'); bar.setAttribute('aria-label', bar.title);
    const planned = Math.max(r.planned, 1);
    let shown = 0;
    if (!r.planned_is_counting) {  // a share of a partial count would show it nearly done
      for (const c of ['succeeded', 'failed', 'running', 'queued', 'skipped']) {
        shown += r[c]; if (r[c] > 0) bar.appendChild(seg(c, 100 * r[c] / planned)); }
      const other = Math.max(r.written - shown, 0); if (other > 0) bar.appendChild(seg('written-other', 100 * other / planned));
      const unwritten = Math.max(r.planned - Math.max(r.written, shown), 0);
      if (unwritten > 0) bar.appendChild(seg('unwritten', 100 * unwritten / planned));
    }
    td.appendChild(bar); tr.appendChild(td);
    for (const c of COUNTS) cell(c === 'planned' ? plannedText : r[c], 'num ' + c);
    cell(r.from_date + ' \\u2192 ' + r.to_date, 'range'); cell(r.user, 'user');
    body.appendChild(tr);
  }
}
async function refresh() {
  try { const answer = await fetch('backfills.json', {credentials: 'same-origin'});
    if (answer.ok) { render((await answer.json()).backfills); document.body.dataset.refreshed = String(Date.now()); }
  } catch (e) { /* keep the last table */ }
}
setInterval(refresh, 5000);
"""


def _page_html(rows: list[dict[str, Any]]) -> str:
    header = "".join(
        f"<th>{name}</th>" for name in ("id", "DAG", "state", "progress", *COUNTS, "range", "triggered by")
    )
    body = "".join(_row_html(row) for row in rows)
    empty = "" if rows else '<p class="empty">No backfills yet.</p>'
    legend = (
        "".join(
            f'<span><i class="seg {name}"></i>{name}</span>'
            for name in ("succeeded", "failed", "running", "queued", "skipped", "unwritten")
        )
        + '<span><i class="counting"></i>plan still being counted (planned shows a lower bound: 12+)</span>'
    )
    script = _SCRIPT % ("[" + ",".join(f"'{c}'" for c in COUNTS) + "]")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Backfill plans</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Backfill plans (airflow-sidecar)</h1>"
        f'<p class="legend">{legend}</p>'
        f'<table><thead><tr>{header}</tr></thead><tbody id="rows">{body}</tbody></table>{empty}'
        f"<script>{script}</script></body></html>"
    )


def build_page(settings: PluginSettings) -> FastAPI:
    """The plugin's FastAPI app: the page and its JSON."""
    calls = SidecarCalls(settings)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def rows_for(user: Any) -> list[dict[str, Any]]:
        readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
        listed = await calls.call(
            "ListBackfills",
            pb.ListBackfillsRequest(page_size=PAGE_SIZE),
            pb.ListBackfillsResponse,
            user.get_name(),
        )
        return [backfill_row(b) for b in listed.backfills if b.dag_id in readable]

    @app.get("/backfills.json")
    async def backfill_plans(user: GetUserDep) -> dict[str, Any]:
        return {"backfills": await rows_for(user)}

    @app.get("/backfills", response_class=HTMLResponse)
    async def backfill_page(user: GetUserDep) -> HTMLResponse:
        return HTMLResponse(_page_html(await rows_for(user)))

    return app
