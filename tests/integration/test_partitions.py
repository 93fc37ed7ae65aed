"""Partitioned DAGs end to end on a real Airflow 3.3.2 schema: windowed writes, key ranges,
ordering, dry runs listing keys, and refusals that write nothing (gRPC, ``/v1`` and ``/api/v2``)."""

from __future__ import annotations

import datetime as dt

import grpc
import httpx
import psycopg2.extensions
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.engine import BY_PARTITION_KEY, BackfillEngine, BackfillSpec, DryRun, Mode, State
from sidecar.server import SidecarServer
from tests.integration.test_grpc_api import details, ts

UTC = dt.UTC
PARTITIONED = "sidecar_it_partitioned"  # daily partitions in New York, keyed "%Y-%m-%d"
THREE = "sidecar_e2e_three"


def ny_midnight(day: int, month: int = 1) -> dt.datetime:
    """Midnight in New York (EST, UTC-5 in January) as UTC: a partition's date."""
    return dt.datetime(2025, month, day, 5, tzinfo=UTC)


def count(sql: psycopg2.extensions.cursor, table: str) -> int:
    sql.execute(f"SELECT count(*) FROM {table}")
    return int(sql.fetchone()[0])


async def test_windowed_key_range_newest_first_to_completion(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    """Keys give the range, newest first; the window is topped up tick by tick until done."""
    spec = BackfillSpec(
        dag_id=PARTITIONED,
        from_date=BY_PARTITION_KEY,
        to_date=BY_PARTITION_KEY,
        from_partition_key="2025-01-02",
        to_partition_key="2025-01-06",
        run_backwards=True,
        max_active_runs=1,
    )
    view = await engine.create(spec)
    assert not isinstance(view, DryRun)
    # The row holds what Airflow stores for the same range given as dates (the keys' wall clock).
    assert (view.from_date, view.to_date) == (
        dt.datetime(2025, 1, 2, tzinfo=UTC),
        dt.datetime(2025, 1, 6, tzinfo=UTC),
    )
    assert view.mode is Mode.WINDOWED and view.run_backwards
    assert (view.progress.planned, view.progress.written) == (5, 2)  # max_active_runs 1 + lookahead 1
    for _ in range(10):
        sql.execute("UPDATE dag_run SET state = 'success' WHERE backfill_id = %s", (view.id,))
        await engine.tick()
    final = await engine.get(view.id)
    assert final.state is State.COMPLETED and final.progress.succeeded == 5

    sql.execute(
        "SELECT b.sort_ordinal, b.partition_key, b.logical_date, r.partition_key, r.partition_date,"
        " r.run_after, r.logical_date, r.data_interval_start, r.data_interval_end, r.run_id"
        " FROM backfill_dag_run b JOIN dag_run r ON r.id = b.dag_run_id WHERE b.backfill_id = %s"
        " ORDER BY b.sort_ordinal",
        (view.id,),
    )
    rows = sql.fetchall()
    keys = [f"2025-01-0{d}" for d in (6, 5, 4, 3, 2)]
    assert [r[1] for r in rows] == keys and [r[3] for r in rows] == keys
    assert [r[4] for r in rows] == [ny_midnight(d) for d in (6, 5, 4, 3, 2)]
    assert all(r[2] is None and r[6] is None and r[7] is None and r[8] is None for r in rows)
    assert all(r[5] == r[4] for r in rows)
    assert all(r[9].startswith(f"backfill__{r[4].isoformat()}__{r[1]}__") for r in rows)
    sql.execute("SELECT count(*) FROM task_instance WHERE run_id LIKE 'backfill\\_\\_%%'")
    assert sql.fetchone() == (10,)


async def test_dry_run_lists_keys_and_reprocess_makes_a_new_run(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    first = await engine.create(
        BackfillSpec(dag_id=PARTITIONED, from_date=ny_day(1), to_date=ny_day(3), mode=Mode.EAGER)
    )
    assert not isinstance(first, DryRun)
    sql.execute("UPDATE dag_run SET state = 'failed', start_date = now() WHERE partition_key = '2025-01-02'")
    sql.execute(
        "UPDATE dag_run SET state = 'success', start_date = now() WHERE partition_key <> '2025-01-02'"
    )
    sql.execute("UPDATE backfill SET completed_at = now()")
    again = BackfillSpec(
        dag_id=PARTITIONED, from_date=ny_day(1), to_date=ny_day(4), reprocess_behavior=_failed()
    )
    plan = await engine.create(again, validate_only=True)
    assert isinstance(plan, DryRun)
    assert [(s.partition_key, s.disposition.value if s.disposition else None) for s in plan.runs] == [
        ("2025-01-01", "already exists"),
        ("2025-01-02", "reprocess"),
        ("2025-01-03", "already exists"),
        ("2025-01-04", "create"),
    ]
    assert all(
        s.logical_date is None and s.partition_date == ny_midnight(int(s.partition_key[-1]))
        for s in plan.runs
    )
    written = await engine.create(again)
    assert not isinstance(written, DryRun)
    # Airflow 3.3 keeps the failed run and makes a new one beside it (no clear).
    sql.execute("SELECT state, clear_number FROM dag_run WHERE partition_key = '2025-01-02' ORDER BY id")
    assert sql.fetchall() == [("failed", 0), ("queued", 0)]
    assert count(sql, "task_instance_history") == 0


def ny_day(day: int) -> dt.datetime:
    """A range bound whose wall clock is New York's midnight of ``day`` (Airflow reads it there)."""
    return dt.datetime(2025, 1, day, tzinfo=UTC)


def _failed() -> object:
    from sidecar.engine import ReprocessBehavior

    return ReprocessBehavior.FAILED


@pytest.fixture
async def stub(server: SidecarServer) -> backfill_pb2_grpc.BackfillServiceStub:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return backfill_pb2_grpc.BackfillServiceStub(channel)


async def test_grpc_keys_ordering_and_dry_run(
    stub: backfill_pb2_grpc.BackfillServiceStub, sql: psycopg2.extensions.cursor
) -> None:
    request = pb.CreateBackfillRequest(
        backfill=pb.Backfill(
            dag_id=PARTITIONED,
            from_partition_key="2025-01-01",
            to_date=ts(2025, 1, 3),
            ordering=pb.ORDERING_NEWEST_FIRST,
        ),
        validate_only=True,
    )
    answer = await stub.CreateBackfill(request)
    assert [r.partition_key for r in answer.planned_runs] == ["2025-01-03", "2025-01-02", "2025-01-01"]
    assert [r.partition_date.ToDatetime(tzinfo=UTC) for r in answer.planned_runs] == [
        ny_midnight(3),
        ny_midnight(2),
        ny_midnight(1),
    ]
    assert not any(
        r.HasField("logical_date") or r.HasField("data_interval_start") for r in answer.planned_runs
    )
    assert answer.backfill.run_backwards and answer.backfill.ordering == pb.ORDERING_NEWEST_FIRST
    assert answer.backfill.from_partition_key == ""  # input only: the date it stands for is returned
    assert answer.backfill.from_date.ToDatetime(tzinfo=UTC) == dt.datetime(2025, 1, 1, tzinfo=UTC)
    assert count(sql, "backfill") == 0


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"dag_id": THREE, "from_partition_key": "2025-01-01"},
            "backfill.from_partition_key",
            "is not partitioned",
        ),
        (
            {"from_partition_key": "2025-01-01", "from_date": ts(2025, 1, 1)},
            "backfill.from_partition_key",
            "not both",
        ),
        ({"from_partition_key": "01/02/2025"}, "backfill.from_partition_key", "does not match"),
        ({"to_partition_key": "2025-02-30"}, "backfill.to_partition_key", "does not match"),
        ({"from_partition_key": " "}, "backfill.from_partition_key", "blank"),
        ({"to_partition_key": "9999-12-31"}, "backfill.to_partition_key", "names no partition"),
        ({"from_partition_key": "0001-01-01"}, "backfill.from_partition_key", "names no partition"),
        ({"from_partition_key": "1899-12-31"}, "backfill.from_partition_key", "on or after 1900-01-01"),
        ({"run_backwards": True, "ordering": pb.ORDERING_OLDEST_FIRST}, "backfill.ordering", "contradicts"),
        ({"ordering": 7}, "backfill.ordering", "unknown ordering"),
    ],
)
async def test_refusals_name_the_field_and_write_nothing(
    stub: backfill_pb2_grpc.BackfillServiceStub,
    sql: psycopg2.extensions.cursor,
    fields: dict[str, object],
    field: str,
    words: str,
) -> None:
    backfill = pb.Backfill(dag_id=PARTITIONED, from_date=ts(2025, 1, 1), to_date=ts(2025, 1, 3))
    for name, value in fields.items():
        if name in ("from_date", "to_date"):
            getattr(backfill, name).CopyFrom(value)
        else:
            setattr(backfill, name, value)
    if "from_partition_key" in fields and "from_date" not in fields:
        backfill.ClearField("from_date")
    if "to_partition_key" in fields:
        backfill.ClearField("to_date")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateBackfill(pb.CreateBackfillRequest(backfill=backfill))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details(caught.value)
    assert [v[0] for v in violations] == [field] and words in violations[0][1], violations
    assert count(sql, "backfill") == 0 and count(sql, "dag_run") == 0


async def test_airflow_dry_run_lists_partitions(http: httpx.AsyncClient) -> None:
    """Airflow's own dry-run body: no logical date, the key and the partition date."""
    body = {"dag_id": PARTITIONED, "from_date": "2025-01-01T00:00:00Z", "to_date": "2025-01-02T00:00:00Z"}
    dry = await http.post("/api/v2/backfills/dry_run", json=body)
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "backfills": [
            {"logical_date": None, "partition_key": "2025-01-01", "partition_date": "2025-01-01T05:00:00Z"},
            {"logical_date": None, "partition_key": "2025-01-02", "partition_date": "2025-01-02T05:00:00Z"},
        ],
        "total_entries": 2,
    }


async def test_v1_create_with_keys_lists_partitioned_runs(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/v1/backfills",
        json={
            "dagId": PARTITIONED,
            "fromPartitionKey": "2025-01-01",
            "toPartitionKey": "2025-01-02",
            "ordering": "ORDERING_OLDEST_FIRST",
        },
    )
    assert created.status_code == 200, created.text
    backfill = created.json()["backfill"]
    name = backfill["name"]
    assert backfill["ordering"] == "ORDERING_OLDEST_FIRST" and not backfill.get("runBackwards")
    runs = (await http.get(f"/v1/{name}/runs")).json()["runs"]
    assert [(r["partitionKey"], r["partitionDate"]) for r in runs] == [
        ("2025-01-01", "2025-01-01T05:00:00Z"),
        ("2025-01-02", "2025-01-02T05:00:00Z"),
    ]
    assert all("logicalDate" not in r for r in runs)
