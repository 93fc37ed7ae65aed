"""A hypothesis-driven fuzz of every gRPC request message against a real server on the real schema.

The strategies are built from the message descriptors (random values for every field, nested
messages included, plus values chosen to reach deeper code: a real DAG id, well-formed and
ill-formed resource names, injection attempts, Timestamps in and out of range). The server must
answer each call with a deliberate status, never INTERNAL/UNKNOWN; a failed create writes no
row; and the server keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import psycopg2
import pytest
from google.protobuf import descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, scheduler_pb2
from sidecar.server import SidecarServer
from tests.integration import test_gateway as base
from tests.integration.conftest import running_server
from tests.support.fixtures import AirflowDatabase

EXAMPLES_PER_METHOD = 100
CRASHES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
_FD = descriptor.FieldDescriptor
_INTERESTING_STRINGS = st.sampled_from(
    [
        "",
        base.THREE,
        "backfills/1",
        "backfills/0",
        "backfills/-1",
        "backfills/²",
        "backfills/99999999999",
        "backfills/1/../2",
        "x'; DROP TABLE backfill; --",
        '{"a": 1}',
        "[1, 2]",
        "null",
        "\x00",
        "v1:5",
        "djE6NQ==",
    ]
)
_MIN_TS, _MAX_TS = -62135596800, 253402300799


def _scalar(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == _FD.TYPE_STRING:
        return st.one_of(_INTERESTING_STRINGS, st.text(max_size=300))
    if kind == _FD.TYPE_BOOL:
        return st.booleans()
    if kind in (_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32, _FD.TYPE_ENUM):
        return st.one_of(st.integers(-3, 12), st.integers(-(2**31), 2**31 - 1))
    if kind in (_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if kind == _FD.TYPE_MESSAGE and field.message_type is not None:
        return message_strategy(field.message_type, depth + 1)
    raise AssertionError(f"no strategy for {field.full_name}")


def _repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _field(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """A value of the field: a short list of elements for a repeated field."""
    element = _scalar(field, depth)
    return st.lists(element, max_size=3) if _repeated(field) else element


def message_strategy(message: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of this type with any subset of fields set to random values."""
    cls = GetMessageClass(message)
    if message.full_name == "google.protobuf.Timestamp":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            st.one_of(
                st.integers(_MIN_TS, _MAX_TS),
                st.integers(1_600_000_000, 1_800_000_000),
                st.integers(-(2**63), 2**63 - 1),  # what a Timestamp's int64 seconds can hold
            ),
            st.one_of(st.just(0), st.integers(-1, 1_000_000_000)),
        ).filter(lambda ts: -(2**63) <= ts.seconds < 2**63)
    if message.full_name == "google.protobuf.Duration":  # any value protobuf can hold
        limit = 315_576_000_000
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n if s >= 0 else -n),
            st.integers(-limit, limit),
            st.integers(0, 999_999_999),
        )
    fields = {f.name: st.none() | _field(f, depth) for f in message.fields if depth < 3}

    def build(values: dict[str, Any]) -> Message:
        out = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = message.fields_by_name[name]
            if _repeated(field):
                getattr(out, name).extend(value)
            elif field.type == _FD.TYPE_MESSAGE:
                getattr(out, name).CopyFrom(value)
            else:
                setattr(out, name, value)
        return out

    return st.fixed_dictionaries(fields).map(build)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


DAG_IDS = [
    "sidecar_e2e_three",
    "sidecar_e2e_three",
    "sidecar_it_params",
    "sidecar_it_interval",
    "sidecar_it_depends_on_past",
    "sidecar_it_manual",
    "sidecar_it_no_backfill",
    "sidecar_it_partitioned",
    "no_such_dag",
]
PARTITION_KEYS = st.sampled_from(["2025-01-01", "2025-01-05", "2025-13-01", "2025-01-01T00:00:00", ""])


def _timestamp(low: int, high: int) -> st.SearchStrategy[Message]:
    return st.builds(lambda s: Timestamp(seconds=s), st.integers(low, high))


def plausible_create() -> st.SearchStrategy[Message]:
    """CreateBackfill requests that mostly pass the field checks, to reach planning and writing."""
    day = 86400
    start = 1_735_689_600  # 2025-01-01

    def build(dag_id: str, first: int, days: int, conf: str, extra: dict[str, Any]) -> Message:
        backfill = backfill_pb2.Backfill(
            dag_id=dag_id,
            from_date=Timestamp(seconds=first),
            to_date=Timestamp(seconds=first + days * day),
            dag_run_conf=conf,
            **extra,
        )
        for end in ("from", "to"):  # a partition key stands for its date
            if f"{end}_partition_key" in extra:
                backfill.ClearField(f"{end}_date")  # type: ignore[arg-type]
        return backfill_pb2.CreateBackfillRequest(backfill=backfill, validate_only=days % 3 == 0)

    return st.builds(
        build,
        st.sampled_from(DAG_IDS),
        st.integers(start - 10 * day, start + 60 * day),
        st.integers(-2, 40),
        st.sampled_from(["", "{}", '{"batch": 3}', '{"batch": 0}', '{"label": 7}', "[]", "{bad"]),
        st.fixed_dictionaries(
            {},
            optional={
                "reprocess_behavior": st.integers(0, 4),
                "max_active_runs": st.integers(-1, 20),
                "run_backwards": st.booleans(),
                "mode": st.integers(0, 3),
                "ordering": st.integers(0, 3),
                "from_partition_key": PARTITION_KEYS,
                "to_partition_key": PARTITION_KEYS,
            },
        ),
    )


def _methods() -> list[tuple[str, descriptor.MethodDescriptor]]:
    out = []
    for module in (backfill_pb2, scheduler_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out.append((f"/{service.full_name}/{method.name}", method))
    return out


def fuzz_method(
    channel: grpc.Channel, backfills: Callable[[], int], path: str, method: descriptor.MethodDescriptor
) -> dict[str, int]:
    """Call one method with generated requests; return how often each status code came back."""
    counts: dict[str, int] = {}
    response_class = GetMessageClass(method.output_type)
    creates = method.name == "CreateBackfill"
    strategy = message_strategy(method.input_type)
    if creates:
        strategy = st.one_of(strategy, plausible_create())

    @given(request=strategy)
    @settings(
        max_examples=EXAMPLES_PER_METHOD,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(request: Message) -> None:
        before = backfills() if creates else 0
        code = grpc.StatusCode.OK
        try:
            if method.server_streaming:
                stream = channel.unary_stream(
                    path, request_serializer=_serialize, response_deserializer=response_class.FromString
                )(request, timeout=30)
                next(iter(stream), None)
                stream.cancel()
            else:
                channel.unary_unary(
                    path, request_serializer=_serialize, response_deserializer=response_class.FromString
                )(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.CANCELLED and method.server_streaming:
                code = grpc.StatusCode.OK  # our own cancel after the first update
            assert code not in CRASHES, (method.name, request, exc.details())
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, (method.name, request)
            if creates:
                assert backfills() == before, (request, "a failed create wrote a row")
        counts[code.name] = counts.get(code.name, 0) + 1

    if creates:  # each outcome the test asserts on, whatever the draws (they change with the API)
        for dag_id in ("no_such_dag", "sidecar_e2e_three"):
            backfill = backfill_pb2.Backfill(
                dag_id=dag_id,
                from_date=Timestamp(seconds=1_735_689_600),
                to_date=Timestamp(seconds=1_735_862_400),
            )
            check = example(
                request=backfill_pb2.CreateBackfillRequest(backfill=backfill, validate_only=True)
            )(check)
    check()
    return counts


def fuzz(port: int, psycopg2_url: str) -> dict[str, dict[str, int]]:
    """Fuzz every method; return the status codes seen per method."""
    seen: dict[str, dict[str, int]] = {}
    conn = psycopg2.connect(psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, conn.cursor() as cur:

            def backfills() -> int:
                cur.execute("SELECT count(*) FROM backfill")
                return int(cur.fetchone()[0])

            for path, method in _methods():
                seen[method.name] = fuzz_method(channel, backfills, path, method)
            # Still serving.
            health = channel.unary_unary(
                "/airflow_sidecar.v1.BackfillService/ListBackfills",
                request_serializer=_serialize,
                response_deserializer=backfill_pb2.ListBackfillsResponse.FromString,
            )(backfill_pb2.ListBackfillsRequest(), timeout=30)
            assert isinstance(health, backfill_pb2.ListBackfillsResponse)
    finally:
        conn.close()
    return seen


@pytest.fixture
async def server(clean_db: AirflowDatabase) -> AsyncIterator[SidecarServer]:
    """The integration server without its notifier loop: hypothesis draws beside it, in a thread."""
    async with running_server(clean_db, notifier=False) as srv:
        yield srv


async def test_grpc_requests_fuzz(server: SidecarServer, clean_db: AirflowDatabase) -> None:
    seen = await asyncio.to_thread(fuzz, server.port, clean_db.psycopg2_url)
    assert set(seen) == {m.name for _, m in _methods()}
    # The fuzz reached the validations, not only the happy path.
    assert seen["CreateBackfill"].get("INVALID_ARGUMENT", 0) > 0
    assert seen["CreateBackfill"].get("OK", 0) > 0
    assert seen["CreateBackfill"].get("NOT_FOUND", 0) > 0
    assert seen["GetBackfill"].get("INVALID_ARGUMENT", 0) > 0
