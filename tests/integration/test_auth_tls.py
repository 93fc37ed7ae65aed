"""TLS and mutual TLS on the gRPC port, with certificates made in the test.

The same server checks tokens as well: TLS protects the token on the wire, it does not
replace it. The CLI's and the shim's channel (``sidecar.auth.open_channel``) is exercised
from a worker thread, because it is synchronous and the server shares the test's loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airflow_shim.client import TickClient
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.auth import AuthConfig, ClientSecurity, TlsConfig, open_channel, token_digest
from sidecar.server import ServerConfig, SidecarServer
from tests.support.fixtures import AirflowDatabase

TOKEN = "svc-tls-0123456789abcdef"


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: list[x509.ObjectIdentifier] | None,
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if ExtendedKeyUsageOID.SERVER_AUTH in usage:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return _name(subject), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _issue(d, "ca", "test-ca", None, None)
    _issue(d, "server", "sidecar", ca, [ExtendedKeyUsageOID.SERVER_AUTH])
    _issue(d, "client", "airflow-scheduler", ca, [ExtendedKeyUsageOID.CLIENT_AUTH])
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


async def _server(db: AirflowDatabase, tmp_path: Path, tls: TlsConfig) -> SidecarServer:
    (tmp_path / "tokens.toml").write_text(
        f'[[token]]\nsha256 = "{token_digest(TOKEN)}"\nprincipal = "svc"\nroles = ["scheduler"]\n'
    )
    server = SidecarServer(
        ServerConfig(
            database_url=db.asyncpg_url,
            listen="127.0.0.1:0",
            tick_interval=3600,
            auth=AuthConfig(token_file=tmp_path / "tokens.toml"),
            tls=tls,
        )
    )
    await server.start()
    return server


@pytest.fixture
async def tls_server(clean_db: AirflowDatabase, tmp_path: Path, pki: Pki) -> AsyncIterator[SidecarServer]:
    server = await _server(clean_db, tmp_path, TlsConfig(pki.server_cert, pki.server_key))
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def mtls_server(clean_db: AirflowDatabase, tmp_path: Path, pki: Pki) -> AsyncIterator[SidecarServer]:
    server = await _server(clean_db, tmp_path, TlsConfig(pki.server_cert, pki.server_key, pki.ca))
    try:
        yield server
    finally:
        await server.stop()


LIST = pb.ListBackfillsRequest()
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def test_tls_server_accepts_tls_clients_with_a_token_only(tls_server: SidecarServer, pki: Pki) -> None:
    target = f"127.0.0.1:{tls_server.port}"
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        assert list((await stub.ListBackfills(LIST, metadata=AUTH)).backfills) == []
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.ListBackfills(LIST)
        assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(target) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await backfill_pb2_grpc.BackfillServiceStub(plaintext).ListBackfills(
                LIST, metadata=AUTH, timeout=10
            )
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(mtls_server: SidecarServer, pki: Pki) -> None:
    target = f"127.0.0.1:{mtls_server.port}"
    anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with grpc.aio.secure_channel(target, anonymous) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await backfill_pb2_grpc.BackfillServiceStub(channel).ListBackfills(
                LIST, metadata=AUTH, timeout=10
            )
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE

    # The CLI's channel: CA, client certificate and token from ClientSecurity.
    security = ClientSecurity(token=TOKEN, ca=pki.ca, cert=pki.client_cert, key=pki.client_key)

    def list_backfills() -> int:
        with open_channel(target, security) as channel:
            stub = backfill_pb2_grpc.BackfillServiceStub(channel)
            return len(stub.ListBackfills(LIST, timeout=10).backfills)

    assert await asyncio.to_thread(list_backfills) == 0


async def test_shim_ticks_over_mutual_tls_with_its_token_from_the_environment(
    mtls_server: SidecarServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_TARGET", f"127.0.0.1:{mtls_server.port}")
    monkeypatch.setenv("SIDECAR_TICK_DEADLINE", "10")
    monkeypatch.setenv("SIDECAR_TOKEN", TOKEN)
    monkeypatch.setenv("SIDECAR_TLS_CA", str(pki.ca))
    monkeypatch.setenv("SIDECAR_TLS_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("SIDECAR_TLS_CLIENT_KEY", str(pki.client_key))
    client = TickClient.from_env()
    try:
        response = await asyncio.to_thread(client.tick)
        assert response is not None
        monkeypatch.setenv("SIDECAR_TOKEN", "wrong")
        refused = TickClient.from_env()
        try:
            assert await asyncio.to_thread(refused.tick) is None
        finally:
            refused.close()
    finally:
        client.close()
