"""What ``doctor --wait`` waits for: causes that cannot be made on demand, classified by their error.

A DNS server that fails a look-up *for now* (``EAI_AGAIN``: Kubernetes DNS not ready) cannot
be produced reliably in a test; the error the resolver raises for it can. The causes that can
be made for real (a schema not migrated yet, TLS mismatches) are in tests/newcomer/test_doctor.py.
"""

from __future__ import annotations

import socket

import pytest

from sidecar.cli._problems import database_may_come_up, database_problem
from sidecar.cli._tls import _host_port
from sidecar.errors import SchemaMismatch, SchemaNotMigrated

URL = "postgresql+asyncpg://airflow@postgres.airflow.svc:5432/airflow"


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
        (SchemaNotMigrated("no alembic_version table"), True),
        (SchemaMismatch("an unsupported revision"), False),
    ],
)
def test_what_waiting_may_cure(exc: BaseException, transient: bool) -> None:
    assert database_may_come_up(exc) is transient


def test_a_host_name_not_resolvable_yet_is_not_called_unknown() -> None:
    later = database_problem(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), URL)
    assert later is not None and later.startswith(
        "the database host 'postgres.airflow.svc' cannot be resolved yet (temporary failure in name resolution"
    )
    unknown = database_problem(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), URL)
    assert unknown is not None and unknown.startswith("unknown database host 'postgres.airflow.svc'")


@pytest.mark.parametrize(
    ("target", "where"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("dns:///sidecar.airflow.svc:50051", ("sidecar.airflow.svc", 50051)),
        ("[::1]:50051", ("::1", 50051)),
        ("unixbox:50051", ("unixbox", 50051)),  # a host whose name starts like a scheme
        ("ipv4box.example:50051", ("ipv4box.example", 50051)),
        ("unix:///run/sidecar.sock", None),
        ("unix:sidecar.sock", None),
        ("unix-abstract:sidecar:1", None),
        ("ipv4:127.0.0.1:50051", None),
        ("ipv6:[::1]:50051", None),
        ("sidecar", None),
    ],
)
def test_the_tls_probe_reaches_host_and_port_targets_only(target: str, where: tuple[str, int] | None) -> None:
    assert _host_port(target) == where
