"""The shim's Tick client: circuit breaker (fake clock), failover between replicas, retries.

The client talks to small in-process gRPC servers that implement ``SchedulerService``
and count the calls they receive, so each test knows exactly how often the shim called.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from airflow_shim._breaker import CircuitBreaker
from airflow_shim.client import TickClient, channel_target
from sidecar._gen.airflow_sidecar.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.support.ports import free_port


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Replica(scheduler_pb2_grpc.SchedulerServiceServicer):
    """One sidecar replica's Tick: answers, fails with ``code``, or sleeps ``delay`` first."""

    def __init__(self) -> None:
        self.calls = 0
        self.code: grpc.StatusCode | None = None
        self.delay = 0.0
        self._lock = threading.Lock()

    def Tick(
        self, request: scheduler_pb2.TickRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.TickResponse:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.code is not None:
            context.abort(self.code, "injected")
        return scheduler_pb2.TickResponse(runs_written=1)


def _serve(replica: Replica) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(replica, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def two_replicas() -> Iterator[tuple[list[Replica], list[grpc.Server], str]]:
    replicas = [Replica(), Replica()]
    served = [_serve(r) for r in replicas]
    try:
        yield replicas, [s for s, _ in served], ",".join(f"127.0.0.1:{p}" for _, p in served)
    finally:
        for server, _ in served:
            server.stop(None)


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=30, clock=clock)
    assert not breaker.failure() and not breaker.failure() and breaker.allow()
    assert breaker.failure()  # the third in a row opens it
    assert not breaker.allow()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # half-open: one trial call
    assert breaker.failure()  # the trial failed: open again at once
    assert not breaker.allow()
    clock.now += 31
    breaker.success()
    assert breaker.allow() and breaker.failures == 0 and breaker.opened == 2


def test_a_down_sidecar_is_not_called_while_the_breaker_is_open() -> None:
    clock = FakeClock()
    client = TickClient(
        f"127.0.0.1:{free_port()}", deadline=2.0, failure_threshold=3, cooldown=30, clock=clock
    )
    try:
        for _ in range(5):
            assert client.tick() is None
        assert client.calls == 3  # the last two were never made
        clock.now += 31
        assert client.tick() is None
        assert client.calls == 4
    finally:
        client.close()


def test_round_robin_between_replicas_and_failover_when_one_dies(
    two_replicas: tuple[list[Replica], list[grpc.Server], str],
) -> None:
    replicas, servers, target = two_replicas
    client = TickClient(target, deadline=5.0)
    try:
        for _ in range(10):
            assert client.tick() is not None
        assert all(r.calls >= 2 for r in replicas), [r.calls for r in replicas]
        servers[0].stop(None)
        before = replicas[1].calls
        for _ in range(10):
            assert client.tick() is not None  # UNAVAILABLE on the dead one is retried on the other
        assert replicas[1].calls - before == 10
        assert client.breaker.failures == 0
    finally:
        client.close()


def test_errors_are_not_retried_and_open_the_breaker(
    two_replicas: tuple[list[Replica], list[grpc.Server], str],
) -> None:
    replicas, _, target = two_replicas
    for r in replicas:
        r.code = grpc.StatusCode.INTERNAL
    client = TickClient(target, deadline=5.0, failure_threshold=3, cooldown=60)
    try:
        for _ in range(6):
            assert client.tick() is None
        assert sum(r.calls for r in replicas) == 3  # one attempt per tick, then the breaker
        assert client.breaker.is_open
    finally:
        client.close()


def test_a_slow_sidecar_costs_at_most_the_deadline_and_does_not_open_the_breaker(
    two_replicas: tuple[list[Replica], list[grpc.Server], str],
) -> None:
    replicas, _, target = two_replicas
    for r in replicas:
        r.delay = 1.0
    client = TickClient(target, deadline=0.2, failure_threshold=2)
    try:
        client.tick()  # connects
        started = time.monotonic()
        for _ in range(3):
            assert client.tick() is None
        assert time.monotonic() - started < 3 * (0.2 + 0.5)  # deadline plus a generous margin each
        assert client.breaker.allow()
    finally:
        client.close()


def test_channel_targets() -> None:
    assert channel_target("127.0.0.1:1") == "127.0.0.1:1"
    assert channel_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("dns:///sidecar:50051") == "dns:///sidecar:50051"
    assert channel_target("ipv4:10.0.0.1:1,10.0.0.2:1") == "ipv4:10.0.0.1:1,10.0.0.2:1"
