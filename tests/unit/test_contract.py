"""The contract: every RPC in the generated descriptors is served, bound, guarded and reachable.

For each method of each service in ``sidecar._gen.airflow_sidecar.v1``:

* the servicer implements it (not the generated ``UNIMPLEMENTED`` default);
* it has a ``google.api.http`` binding, except the scheduler-facing Tick, which must have none;
* the authorisation table (``sidecar.auth.METHOD_RULES``) says which action it is and where
  its DAG comes from (a method without a rule is refused at run time);
* a CLI command reaches it (``sidecar.cli.RPC_COMMANDS``, checked against the real parser);
* the REST gateway routes every binding (hook below: ``GATEWAY_ROUTES`` once the gateway
  exports one, else the gateway's own binding table).

A new RPC therefore fails this test until all five exist.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from collections.abc import Iterator

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, json_format

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.api import BackfillServicer, SchedulerServicer
from sidecar.auth import METHOD_RULES, Action, Target
from sidecar.cli import RPC_COMMANDS, build_parser

#: service full name -> (our servicer, the generated base class with UNIMPLEMENTED defaults)
SERVICERS: dict[str, tuple[type, type]] = {
    "airflow_sidecar.v1.BackfillService": (BackfillServicer, backfill_pb2_grpc.BackfillServiceServicer),
    "airflow_sidecar.v1.SchedulerService": (SchedulerServicer, scheduler_pb2_grpc.SchedulerServiceServicer),
}
#: RPCs only the scheduler's shim calls: no HTTP binding, their own role.
SCHEDULER_ONLY = {"/airflow_sidecar.v1.SchedulerService/Tick"}


def _services() -> Iterator[descriptor.ServiceDescriptor]:
    for module in (backfill_pb2, scheduler_pb2):
        yield from module.DESCRIPTOR.services_by_name.values()


def _rpcs() -> list[tuple[descriptor.ServiceDescriptor, descriptor.MethodDescriptor]]:
    return [(service, method) for service in _services() for method in service.methods]


def _path(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> str:
    return f"/{service.full_name}/{method.name}"


RPCS = _rpcs()
IDS = [_path(s, m).lstrip("/") for s, m in RPCS]


def _http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    # Re-parse: the options of a generated descriptor only expose extensions whose module
    # is imported, so go through the serialized form with annotations_pb2 loaded.
    options = descriptor_pb2.MethodOptions()
    options.ParseFromString(method.GetOptions().SerializeToString())
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def gateway_routes() -> set[str] | None:
    """The gRPC paths the REST gateway routes; None while there is no gateway package.

    Hook for the gateway: export ``GATEWAY_ROUTES`` (an iterable of ``/pkg.Service/Method``
    paths, e.g. built from its router) from ``sidecar.gateway`` and this test checks it;
    until then the gateway's own binding table stands in for it.
    """
    if importlib.util.find_spec("sidecar.gateway") is None:
        return None
    gateway = importlib.import_module("sidecar.gateway")
    routes = getattr(gateway, "GATEWAY_ROUTES", None)
    if routes is not None:
        return {str(r) for r in routes}
    bindings = gateway.bindings_of(list(_services()))
    return {b.grpc_path for b in bindings}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_descriptors_hold_the_services_we_serve() -> None:
    assert {s.full_name for s in _services()} == set(SERVICERS)
    assert len(RPCS) >= 9


@pytest.mark.parametrize(("service", "method"), RPCS, ids=IDS)
def test_servicer_implements_it(
    service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
) -> None:
    ours, generated = SERVICERS[service.full_name]
    implementation = getattr(ours, method.name, None)
    assert callable(implementation), f"{ours.__name__} has no {method.name}"
    assert implementation is not getattr(generated, method.name), (
        f"{method.name} is the UNIMPLEMENTED default"
    )


@pytest.mark.parametrize(("service", "method"), RPCS, ids=IDS)
def test_http_binding(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> None:
    rule = _http_rule(method)
    if _path(service, method) in SCHEDULER_ONLY:
        assert rule is None, "scheduler-only RPCs must not be reachable over HTTP"
    else:
        assert rule is not None and rule.WhichOneof("pattern") in {"get", "post", "put", "patch", "delete"}


@pytest.mark.parametrize(("service", "method"), RPCS, ids=IDS)
def test_authorisation_rule(
    service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
) -> None:
    path = _path(service, method)
    rule = METHOD_RULES.get(path)
    assert rule is not None, f"{path} has no authorisation rule (sidecar/auth/_actions.py)"
    if path in SCHEDULER_ONLY:
        assert (rule.action, rule.target) == (Action.TICK, Target.NONE)
        return
    assert rule.action is not Action.TICK
    if rule.target is not Target.NONE:
        # The field the rule reads must exist on the request, or authorisation would crash.
        message = method.input_type
        for part in rule.field.split("."):
            field = message.fields_by_name.get(part)
            assert field is not None, f"{path}: request has no field {rule.field}"
            message = field.message_type
        assert field.type == descriptor.FieldDescriptor.TYPE_STRING


def test_no_authorisation_rule_for_a_method_that_does_not_exist() -> None:
    assert set(METHOD_RULES) == {_path(s, m) for s, m in RPCS}


@pytest.mark.parametrize(("service", "method"), RPCS, ids=IDS)
def test_cli_command(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> None:
    path = _path(service, method)
    command = RPC_COMMANDS.get(path)
    assert command is not None, f"{path} has no CLI command (sidecar.cli.RPC_COMMANDS)"
    parser = build_parser()
    words = [w for w in command if not w.startswith("-")]
    for word in words:
        choices = _subcommands(parser)
        assert word in choices, f"{' '.join(command)}: no subcommand {word!r}"
        parser = choices[word]
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {w for w in command if w.startswith("-")} <= flags


def test_every_http_binding_has_a_gateway_route() -> None:
    routes = gateway_routes()
    bound = {_path(s, m) for s, m in RPCS if _http_rule(m) is not None}
    assert routes is not None, "the REST gateway (sidecar.gateway) is missing"
    assert bound <= routes, f"no gateway route for {sorted(bound - routes)}"
    assert not (routes & SCHEDULER_ONLY)


# ---------------------------------------------------------------- fields on every surface


class _RecordingStub:
    """Stands in for the gRPC stub: keeps the request the CLI builds, answers a default backfill."""

    def __init__(self) -> None:
        self.requests: list[backfill_pb2.CreateBackfillRequest] = []

    def CreateBackfill(
        self, request: backfill_pb2.CreateBackfillRequest, timeout: float | None = None
    ) -> backfill_pb2.CreateBackfillResponse:
        self.requests.append(request)
        return backfill_pb2.CreateBackfillResponse(backfill=backfill_pb2.Backfill(name="backfills/1", id=1))


@pytest.mark.parametrize(
    ("flag", "value"),
    [([], None), (["--run-on-latest-version"], True), (["--no-run-on-latest-version"], False)],
)
def test_run_on_latest_version_on_every_surface(flag: list[str], value: bool | None) -> None:
    """Field 19 goes from each surface to the engine's spec unchanged, unset staying unset."""
    from sidecar.api._convert import spec_of
    from sidecar.cli._client import _create
    from sidecar.gateway import AirflowBackfillBody, airflow_create_request

    # CLI
    args = build_parser().parse_args(
        ["backfill", "create", "--dag-id", "d", "--from-date", "2024-01-01", "--to-date", "2024-01-02", *flag]
    )
    stub = _RecordingStub()
    _create(stub, args, None)  # type: ignore[arg-type]
    (cli_request,) = stub.requests
    # Airflow's /api/v2 body (the gateway and the Airflow plugin share this translation)
    body = {"dag_id": "d", "from_date": "2024-01-01T00:00:00Z", "to_date": "2024-01-02T00:00:00Z"}
    if value is not None:
        body["run_on_latest_version"] = value  # type: ignore[assignment]
    api_v2 = airflow_create_request(AirflowBackfillBody.model_validate(body), dry_run=False)
    # /v1: the proto3 JSON mapping of the same message
    v1 = backfill_pb2.CreateBackfillRequest()
    json_format.Parse(
        json.dumps({"backfill": {"dagId": "d"} | ({} if value is None else {"runOnLatestVersion": value})}),
        v1,
    )
    for request in (cli_request, api_v2, v1):
        assert request.backfill.HasField("run_on_latest_version") is (value is not None)
        if value is not None:
            assert request.backfill.run_on_latest_version is value
    for request in (cli_request, api_v2):  # complete requests: what the engine is asked
        assert spec_of(request, "someone").run_on_latest_version is value
    # Read back: the resolved value and the pinned bundle version (output only)
    fields = backfill_pb2.Backfill.DESCRIPTOR.fields_by_name
    assert fields["run_on_latest_version"].number == 19 and fields["bundle_version"].number == 20
