"""The contract of the range bounds' UTC offsets (Backfill fields 21, 22) on every surface.

Every Timestamp field of ``Backfill`` with a ``<field>_utc_offset_seconds`` sibling must be
filled by each way in (the ``/v1`` gateway from RFC 3339 text, Airflow's ``/api/v2`` body,
the CLI's ``--from-date``/``--to-date``), read by the server into the caller's datetime,
and shown back on the resource; offsets the server cannot hold are refused by field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.api._convert import backfill_message, spec_of
from sidecar.cli import _client, build_parser
from sidecar.engine import Mode
from sidecar.errors import InvalidArgument
from sidecar.gateway import airflow_create_request, bindings_of
from sidecar.gateway._airflow import parse_body
from sidecar.gateway._bindings import OFFSET_SUFFIX, build_request
from tests.support.views import backfill_view

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
NEPAL = dt.timezone(dt.timedelta(hours=5, minutes=45))
MARQUESAS = dt.timezone(-dt.timedelta(hours=9, minutes=30))

#: The Timestamp fields of Backfill that carry an offset beside them.
OFFSET_FIELDS = [
    f.name
    for f in pb.Backfill.DESCRIPTOR.fields
    if f.message_type is not None
    and f.message_type.full_name == "google.protobuf.Timestamp"
    and f.name + OFFSET_SUFFIX in pb.Backfill.DESCRIPTOR.fields_by_name
]


def test_the_bounds_and_only_they_carry_an_offset() -> None:
    assert OFFSET_FIELDS == ["from_date", "to_date"]
    numbers = {f.name: f.number for f in pb.Backfill.DESCRIPTOR.fields}
    assert (numbers["from_date_utc_offset_seconds"], numbers["to_date_utc_offset_seconds"]) == (21, 22)


def _create_binding() -> Any:
    return next(
        b for b in bindings_of(pb.DESCRIPTOR.services_by_name.values()) if b.method.name == "CreateBackfill"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2024-01-01T00:00:00+05:30", 19800),
        ("2024-01-01T00:00:00.5-09:30", -34200),
        ("2024-01-01T00:00:00+14:00", 50400),
        ("2024-01-01T00:00:00Z", 0),
        ("2024-01-01T00:00:00+00:00", 0),
    ],
)
def test_v1_gateway_fills_the_offset_from_rfc3339(text: str, seconds: int) -> None:
    body = {"dagId": "d", "fromDate": text, "to_date": text}
    request = build_request(_create_binding(), {}, [], body)
    assert request.backfill.from_date_utc_offset_seconds == seconds
    assert request.backfill.to_date_utc_offset_seconds == seconds
    # the instant is the one written, whatever the offset
    written = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert request.backfill.from_date.ToDatetime(tzinfo=dt.UTC) == written


def test_v1_gateway_keeps_an_offset_given_explicitly() -> None:
    body = {"dag_id": "d", "from_date": "2024-01-01T00:00:00+05:30", "fromDateUtcOffsetSeconds": 3600}
    request = build_request(_create_binding(), {}, [], body)
    assert request.backfill.from_date_utc_offset_seconds == 3600  # the server checks it


@pytest.mark.parametrize("zone", [IST, NEPAL, MARQUESAS, dt.UTC, None])
def test_airflow_api_body_carries_the_offset(zone: dt.tzinfo | None) -> None:
    when = dt.datetime(2024, 1, 1, tzinfo=zone)
    body = parse_body({"dag_id": "d", "from_date": when.isoformat(), "to_date": when.isoformat()}, True)
    request = airflow_create_request(body, dry_run=False)
    expected = int(when.utcoffset().total_seconds()) if zone is not None else 0  # type: ignore[union-attr]
    assert request.backfill.from_date_utc_offset_seconds == expected
    assert request.backfill.to_date_utc_offset_seconds == expected


class _Stub:
    """Captures the CreateBackfill request the CLI sends."""

    def __init__(self) -> None:
        self.request: pb.CreateBackfillRequest | None = None

    def CreateBackfill(self, request: pb.CreateBackfillRequest, timeout: float | None) -> Any:
        self.request = request
        raise RuntimeError("sent")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2024-01-01T00:00:00+05:30", 19800), ("2024-01-01T00:00-03:00", -10800), ("2024-01-01", 0)],
)
def test_cli_sends_the_offset(text: str, seconds: int) -> None:
    stub = _Stub()
    args = build_parser().parse_args(
        ["backfill", "create", "--dag-id", "d", "--from-date", text, "--to-date", text]
    )
    with pytest.raises(RuntimeError, match="sent"):
        _client._create(stub, args, None)  # type: ignore[arg-type]
    assert stub.request is not None
    assert stub.request.backfill.from_date_utc_offset_seconds == seconds
    assert stub.request.backfill.to_date_utc_offset_seconds == seconds


def _request(from_offset: int, to_offset: int = 0) -> pb.CreateBackfillRequest:
    b = pb.Backfill(
        dag_id="d", from_date_utc_offset_seconds=from_offset, to_date_utc_offset_seconds=to_offset
    )
    b.from_date.FromDatetime(dt.datetime(2023, 12, 31, 18, 30))
    b.to_date.FromDatetime(dt.datetime(2024, 1, 2))
    return pb.CreateBackfillRequest(backfill=b)


def test_the_server_reads_the_callers_datetime() -> None:
    spec = spec_of(_request(19800, -34200), None)
    assert spec.from_date.isoformat() == "2024-01-01T00:00:00+05:30"
    assert spec.to_date.isoformat() == "2024-01-01T14:30:00-09:30"
    assert spec_of(_request(0), None).from_date.isoformat() == "2023-12-31T18:30:00+00:00"


@pytest.mark.parametrize("seconds", [1, 19830 + 15, 86400, -86400, 24 * 3600 - 59])
def test_an_offset_the_server_cannot_hold_is_refused_by_field(seconds: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_of(_request(seconds), None)
    assert caught.value.field == "backfill.from_date_utc_offset_seconds"


def test_the_resource_shows_the_offsets_back() -> None:
    moment = dt.datetime(2024, 1, 1, tzinfo=IST)
    view = backfill_view(
        id=1,
        from_date=moment,
        to_date=moment.astimezone(MARQUESAS),
        reprocess_behavior=None,
        max_active_runs=1,
        mode=Mode.EAGER,
        created_at=moment,
        updated_at=moment,
    )
    message = backfill_message(view)
    assert (message.from_date_utc_offset_seconds, message.to_date_utc_offset_seconds) == (19800, -34200)
    assert message.from_date.ToDatetime(tzinfo=dt.UTC) == moment


def test_an_offset_past_the_calendars_end_is_refused_not_crashed() -> None:
    request = _request(-3600)
    request.backfill.from_date.FromDatetime(dt.datetime(1, 1, 1))
    with pytest.raises(InvalidArgument) as caught:
        spec_of(request, None)
    assert caught.value.field == "backfill.from_date"
