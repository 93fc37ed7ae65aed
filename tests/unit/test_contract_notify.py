"""The contract for webhooks, estimates and dry-run summaries: every surface carries each field.

``Backfill.webhook`` (37, input ``url``/``format``, output ``target``/``undelivered``/
``given_up``/``last_error``), ``Backfill.estimate`` (38, output only),
``CreateBackfillRequest.dry_run_view`` (5), ``CreateBackfillResponse.summary`` (5) and
``WatchBackfillResponse.events`` (2): the gRPC converter reads and writes them, the CLI sets
the inputs, Airflow's ``/api/v2`` body and response carry webhook and estimate as documented
sidecar extensions, and the OpenAPI document lists them for ``/v1`` and ``/api/v2``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.api._convert import backfill_message, spec_of
from sidecar.cli import build_parser
from sidecar.cli._client import _set_webhook
from sidecar.cli._plans import summary_dict
from sidecar.engine import Estimate, WebhookStatus
from sidecar.estimate_json import estimate_dict
from sidecar.gateway._airflow import BackfillPostBody, backfill_json, create_request
from tests.support.views import DAY, backfill_view

DOCUMENT = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
SCHEMAS = DOCUMENT["components"]["schemas"]
URL = "https://hooks.example.com/services/T0/B0/SECRET"


ESTIMATE = Estimate(
    basis="history",
    sample_size=4,
    run_p50=dt.timedelta(seconds=150),
    run_p90=dt.timedelta(seconds=222),
    runs_remaining=4,
    remaining_p50=dt.timedelta(seconds=300),
    remaining_p90=dt.timedelta(seconds=444),
)
STATUS = WebhookStatus(URL, "slack", undelivered=2, given_up=1, last_error="answered HTTP 500")


def _request(backfill: pb.Backfill) -> pb.CreateBackfillRequest:
    backfill.dag_id = "d"
    backfill.from_date.FromDatetime(DAY)
    backfill.to_date.FromDatetime(DAY)
    return pb.CreateBackfillRequest(backfill=backfill)


def test_grpc_reads_the_webhook_and_never_writes_its_url_back() -> None:
    spec = spec_of(_request(pb.Backfill(webhook=pb.Webhook(url=URL, format=pb.Webhook.FORMAT_SLACK))), None)
    assert (spec.webhook_url, spec.webhook_format) == (URL, "slack")
    shown = backfill_message(backfill_view(webhook=STATUS)).webhook
    assert shown.url == "" and shown.target == "https://hooks.example.com/…"
    assert (shown.format, shown.undelivered, shown.given_up, shown.last_error) == (
        pb.Webhook.FORMAT_SLACK,
        2,
        1,
        "answered HTTP 500",
    )


def test_grpc_writes_the_estimate() -> None:
    e = backfill_message(backfill_view(estimate=ESTIMATE)).estimate
    assert (e.basis, e.sample_size, e.runs_remaining) == ("history", 4, 4)
    assert e.remaining_p50.ToTimedelta() == dt.timedelta(seconds=300)
    assert e.run_duration_p90.ToTimedelta() == dt.timedelta(seconds=222)


def test_the_cli_sets_the_webhook_and_the_summarybackfill_view() -> None:
    args = build_parser().parse_args(
        ["backfill", "create", "--dag-id", "d", "--from-date", "2025-01-01", "--to-date", "2025-01-02",
         "--webhook-url", URL, "--webhook-format", "slack", "--dry-run", "--summary"]
    )  # fmt: skip
    backfill = pb.Backfill()
    _set_webhook(backfill, args)
    assert (backfill.webhook.url, backfill.webhook.format) == (URL, pb.Webhook.FORMAT_SLACK)
    assert args.summary and args.dry_run


def test_api_v2_carries_webhook_and_estimate_as_extensions() -> None:
    body = BackfillPostBody(
        dag_id="d",
        from_date=DAY,
        to_date=DAY,
        webhook={"url": URL, "format": "slack"},  # type: ignore[arg-type]
    )
    sent = create_request(body, dry_run=False).backfill.webhook
    assert (sent.url, sent.format) == (URL, pb.Webhook.FORMAT_SLACK)
    shown = backfill_json(backfill_message(backfill_view(webhook=STATUS, estimate=ESTIMATE)))
    assert shown["webhook"]["target"] == "https://hooks.example.com/…" and URL not in json.dumps(shown)
    assert shown["estimate"]["remaining_p50_seconds"] == 300
    plain = backfill_json(backfill_message(backfill_view()))
    assert "webhook" not in plain and "estimate" not in plain  # absent on backfills without them


def test_the_openapi_document_lists_them() -> None:
    text = json.dumps(DOCUMENT)
    for name in ("webhook", "estimate", "dry_run_view", "summary", "events"):
        assert f'"{name}"' in text, name
    assert "webhook" in SCHEMAS["BackfillPostBody"]["properties"]


def test_the_cli_and_api_v2_print_one_estimate_shape() -> None:
    message = backfill_message(backfill_view(estimate=ESTIMATE))
    printed = summary_dict(pb.CreateBackfillResponse(backfill=message))["estimate"]
    assert printed == backfill_json(message)["estimate"] == estimate_dict(message.estimate)
    assert printed["runs_remaining"] == 4 and printed["run_duration_p50_seconds"] == 150
