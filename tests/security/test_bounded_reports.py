"""What the server keeps per scheduler is bounded (issue 10): Tick payloads, schedulers
tracked, and the mutation-hook warning, which is logged once per change, not every tick."""

from __future__ import annotations

import logging

import grpc
import pytest

from sidecar._gen.airflow_sidecar.v1 import scheduler_pb2, scheduler_pb2_grpc
from sidecar.engine import BackfillEngine
from sidecar.engine._policies import MAX_HOOK_NAME, MAX_SCHEDULER_ID, MAX_SCHEDULERS, SchedulerPolicies
from sidecar.errors import InvalidArgument
from sidecar.server import SidecarServer

HOOK = "cluster_policies.mutate_task_instance"


async def tick(server: SidecarServer, scheduler_id: str, hook: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        await stub.Tick(
            scheduler_pb2.TickRequest(scheduler_id=scheduler_id, task_instance_mutation_hook=hook), timeout=30
        )


@pytest.mark.parametrize(
    ("scheduler_id", "hook"),
    [
        ("s" * (MAX_SCHEDULER_ID + 1), HOOK),
        ("scheduler-1", "h" * (MAX_HOOK_NAME + 1)),
        ("scheduler-1", "h" * 3 * 1024 * 1024),  # the report's 3 MB Tick
    ],
)
async def test_oversized_reports_are_refused_and_nothing_is_kept(
    server: SidecarServer, scheduler_id: str, hook: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tick(server, scheduler_id, hook)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.engine is not None
    assert server.engine.policies.active_hooks() == {}


async def test_reports_at_the_bounds_are_kept(server: SidecarServer) -> None:
    await tick(server, "s" * MAX_SCHEDULER_ID, "h" * MAX_HOOK_NAME)
    assert server.engine is not None
    assert server.engine.policies.active_hooks() == {"s" * MAX_SCHEDULER_ID: "h" * MAX_HOOK_NAME}


def test_the_least_recently_reporting_schedulers_are_forgotten_first() -> None:
    policies = SchedulerPolicies()
    for number in range(MAX_SCHEDULERS + 44):
        policies.report(f"scheduler-{number}", HOOK)
    policies.report("scheduler-50", HOOK)  # reports again: now the most recent
    policies.report("scheduler-extra", HOOK)
    hooks = policies.active_hooks()
    assert len(hooks) == MAX_SCHEDULERS
    assert "scheduler-0" not in hooks and "scheduler-44" not in hooks
    assert {"scheduler-50", "scheduler-45", "scheduler-extra"} <= set(hooks)
    with pytest.raises(InvalidArgument) as refused:
        policies.report("x" * (MAX_SCHEDULER_ID + 1), "")
    assert refused.value.field == "scheduler_id"


async def test_the_hook_warning_is_logged_once_per_change(
    engine: BackfillEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.engine._policies")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    long_hook = "pkg." + "h" * (MAX_HOOK_NAME - 4)
    engine.policies.report("scheduler-1", long_hook)
    for _ in range(5):
        await engine.tick()
    assert len(warnings()) == 1
    assert len(warnings()[0]) < 600  # each name cut, never the whole report
    engine.policies.report("scheduler-2", HOOK)  # the reported set changes: logged again
    for _ in range(3):
        await engine.tick()
    assert len(warnings()) == 2 and HOOK in warnings()[1]
    engine.policies.report("scheduler-1", "")
    engine.policies.report("scheduler-2", "")
    await engine.tick()
    await engine.tick()
    assert len(warnings()) == 2
    assert sum("any more" in r.getMessage() for r in caplog.records) == 1
