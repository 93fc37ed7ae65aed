"""The contract for the backfill controls (``Backfill`` fields 28..32): every surface carries each one.

For each field: the gRPC converter reads it from a request (or, output only, writes it from
the engine's view) and writes it back; the CLI's ``backfill create`` has an option that sets
it; Airflow's ``/api/v2`` body (input fields) and response carry it as a documented sidecar
extension; and the OpenAPI document lists it for ``/v1`` and ``/api/v2``. A new control
field fails this test until every surface has it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import descriptor

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.api._convert import backfill_message, spec_of
from sidecar.cli import build_parser
from sidecar.cli._client import _set_controls
from sidecar.engine import BackfillView, Controls, State
from sidecar.gateway._airflow import BackfillPostBody, BackfillResponse, backfill_json, create_request
from tests.support.views import DAY, backfill_view

CONTROL_NUMBERS = range(28, 33)
FIELDS = [f for f in pb.Backfill.DESCRIPTOR.fields if f.number in CONTROL_NUMBERS]
#: A value for each field that is not its default.
VALUES: dict[str, object] = {
    "max_failed_runs": 3,
    "priority": 7,
    "pause_reason": "3 failed runs reached max_failed_runs 3",
    "dag_max_active_runs": 4,
    "concurrent": True,
}
OUTPUT_ONLY = {"pause_reason"}
DOCUMENT = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())["components"][
    "schemas"
]


def test_the_control_fields_are_these() -> None:
    assert sorted(f.name for f in FIELDS) == sorted(VALUES)


def view(**controls: object) -> BackfillView:
    reason = controls.pop("pause_reason", None)
    return backfill_view(
        is_paused=reason is not None,
        state=State.PAUSED if reason else State.ACTIVE,
        controls=Controls(**controls),  # type: ignore[arg-type]
        pause_reason=reason,
    )


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_grpc_reads_and_writes_it(field: descriptor.FieldDescriptor) -> None:
    value = VALUES[field.name]
    message = backfill_message(view(**{field.name: value}))
    assert getattr(message, field.name) == value
    if field.name in OUTPUT_ONLY:
        return
    request = pb.CreateBackfillRequest(backfill=pb.Backfill(dag_id="d", **{field.name: value}))
    request.backfill.from_date.FromDatetime(DAY)
    request.backfill.to_date.FromDatetime(DAY)
    assert getattr(spec_of(request, None).controls, field.name) == value


@pytest.mark.parametrize("field", [f for f in FIELDS if f.name not in OUTPUT_ONLY], ids=lambda f: f.name)
def test_the_cli_sets_it(field: descriptor.FieldDescriptor) -> None:
    value = VALUES[field.name]
    option = "--" + field.name.replace("_", "-")
    words = [option] if value is True else [option, str(value)]
    args = build_parser().parse_args(
        [
            "backfill",
            "create",
            "--dag-id",
            "d",
            "--from-date",
            "2025-01-01",
            "--to-date",
            "2025-01-02",
            *words,
        ]
    )
    backfill = pb.Backfill()
    _set_controls(backfill, args)
    assert getattr(backfill, field.name) == value


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_airflows_api_carries_it_as_a_sidecar_extension(field: descriptor.FieldDescriptor) -> None:
    value = VALUES[field.name]
    assert field.name in BackfillResponse.model_fields
    message = backfill_message(view(**{field.name: value}))
    assert backfill_json(message)[field.name] == value
    assert "Sidecar extension" in json.dumps(DOCUMENT["BackfillPostBody"]) + json.dumps(
        DOCUMENT["BackfillResponse"]
    )
    assert field.name in DOCUMENT["BackfillResponse"]["properties"]
    if field.name in OUTPUT_ONLY:
        assert field.name not in BackfillPostBody.model_fields
        return
    body = BackfillPostBody.model_validate(
        {"dag_id": "d", "from_date": DAY.isoformat(), "to_date": DAY.isoformat(), field.name: value}
    )
    assert getattr(create_request(body, dry_run=False).backfill, field.name) == value
    assert field.name in DOCUMENT["BackfillPostBody"]["properties"]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_the_v1_openapi_document_lists_it(field: descriptor.FieldDescriptor) -> None:
    assert field.json_name in DOCUMENT["airflow_sidecar.v1.Backfill"]["properties"]
