"""A TLS mismatch between a client and the sidecar, told apart from a sidecar not up yet.

gRPC reports both as UNAVAILABLE. A client set to TLS that meets a plaintext server, or a
certificate that does not verify, shows in the status detail (the handshake failed). A
plaintext client that meets a TLS server only reads "Socket closed", as it would from a
server going down; one TLS handshake with the target (nothing verified, nothing sent after
it) tells whether the server speaks TLS. Waiting cures none of these: they are settings.
A server that completes the handshake and then hangs up without a word is the exception: a
mutual-TLS server wanting a certificate may do that, but so does a TLS-terminating proxy whose
backend is not up yet, so it is waited for.
"""

from __future__ import annotations

import socket
import ssl
from typing import NamedTuple

from sidecar.config import ClientSecurity

#: Where the client's TLS settings are, for the advice lines.
CLIENT_TLS = "--tls/--tls-ca/--tls-cert (SIDECAR_TLS, SIDECAR_TLS_CA, SIDECAR_TLS_CLIENT_CERT)"
#: What a client's TLS library says when the server does not answer the handshake in TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "wrong version number", "packet length too long")
#: What it says when the server's certificate does not verify.
_UNVERIFIED = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
#: The alerts of a TLS server refusing a client's certificate, or the lack of one.
_CERT_REFUSED = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA")
#: gRPC's address schemes that name no host and port.
_NOT_HOST_PORT = ("unix:", "unix-abstract:", "ipv4:", "ipv6:")
#: What to do for a server that wants a client certificate.
_CLIENT_CERT = "pass --tls-cert and --tls-key (SIDECAR_TLS_CLIENT_CERT, SIDECAR_TLS_CLIENT_KEY)"
#: What to do for a server that does not trust the client's certificate.
_TRUSTED_CERT = "pass a --tls-cert (SIDECAR_TLS_CLIENT_CERT) signed by the CA in serve's --tls-client-ca"


class TlsProblem(NamedTuple):
    """A TLS mismatch's line, and whether waiting may cure it."""

    line: str
    transient: bool = False


def _host_port(target: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` (or ``dns:///host:port``) target; None for others."""
    address = target.removeprefix("dns:///").removeprefix("dns:")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address or address.startswith(_NOT_HOST_PORT):
        return None
    return host.strip("[]"), int(port)


def server_speaks(target: str, timeout: float, security: ClientSecurity | None = None) -> str | None:
    """What the server at ``target`` answers a TLS handshake with, nothing verified.

    The handshake presents the client certificate of ``security``, if any. ``"tls"``: it speaks
    TLS; ``"tls-refused"``: TLS, and its alert refused the client's certificate (or the lack of
    one); ``"tls-closed"``: TLS, and it hung up after the handshake without a word;
    ``"plaintext"``: not TLS; None: nothing was learnt (no connection, say).
    """
    # The probe connects directly, ignoring grpc_proxy/https_proxy: where it cannot connect it
    # only ever concludes that nothing was learnt (None), which is waited for.
    where = _host_port(target)
    if where is None:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # as gRPC offers it
    try:
        if security is not None and security.cert is not None:
            context.load_cert_chain(security.cert, security.key)
        with (
            socket.create_connection(where, timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=where[0]) as tls,
        ):
            tls.settimeout(min(timeout, 1.0))
            try:
                # In TLS 1.3 a server refuses a client's certificate after the handshake: it
                # says so (an alert) or hangs up, where another sends its HTTP/2 settings.
                if tls.recv(1) == b"":
                    return "tls-closed"
            except ssl.SSLError as exc:
                if any(mark in str(exc) for mark in _CERT_REFUSED):
                    return "tls-refused"
            except OSError:  # nothing to read in time
                pass
            return "tls"
    except ssl.SSLError as exc:
        if any(mark in str(exc) for mark in _CERT_REFUSED):  # TLS 1.2 refuses in the handshake
            return "tls-refused"
        return "plaintext" if any(mark in str(exc) for mark in _NOT_TLS) else None
    except OSError:
        return None


def tls_problem(detail: str, target: str, security: ClientSecurity, timeout: float) -> TlsProblem | None:
    """The TLS mismatch behind an UNAVAILABLE from ``target`` (its ``detail``), or None.

    Args:
        detail: the status detail gRPC gave.
        target: the sidecar's address.
        security: the client's settings (TLS or plaintext, a client certificate or not).
        timeout: seconds the probe handshake may take.
    """
    if security.uses_tls and any(mark in detail for mark in _NOT_TLS):
        return TlsProblem(
            f"{target} does not speak TLS, but this client is set to use TLS ({CLIENT_TLS}): unset "
            "them, or start serve with --tls-cert and --tls-key"
        )
    if security.uses_tls and "Hostname Verification" in detail:
        return TlsProblem(
            f"the TLS certificate of {target} does not name its host ({_reason(detail)}): use a --target "
            "(SIDECAR_TARGET) host that serve's certificate names, or add it to the certificate"
        )
    if security.uses_tls and any(mark in detail for mark in _UNVERIFIED):
        against = f"the CA in {security.ca}" if security.ca else "the system's root certificates"
        return TlsProblem(
            f"the TLS certificate of {target} does not verify against {against} ({_reason(detail)}): point "
            "--tls-ca (SIDECAR_TLS_CA) at the CA that signed serve's certificate"
        )
    if "resolv" in detail.lower():
        return None  # its name does not resolve (yet): not TLS
    speaks = server_speaks(target, timeout, security)
    if not security.uses_tls and speaks in ("tls", "tls-refused", "tls-closed"):
        return TlsProblem(
            f"{target} speaks TLS, but this client is set to plaintext: set --tls (SIDECAR_TLS=1) or "
            "--tls-ca (SIDECAR_TLS_CA) to the CA that signed serve's certificate"
        )
    if not security.uses_tls or speaks not in ("tls-refused", "tls-closed"):
        return None
    if speaks == "tls-closed":
        wants = "a client certificate" if security.cert is None else "a client certificate it trusts"
        return TlsProblem(
            f"{target} closed after the TLS handshake: it wants {wants} (mutual TLS), or a proxy's "
            f"backend is not up; {_CLIENT_CERT if security.cert is None else _TRUSTED_CERT}",
            transient=True,
        )
    if security.cert is None:
        return TlsProblem(f"{target} wants a TLS client certificate (mutual TLS): {_CLIENT_CERT}")
    return TlsProblem(f"{target} refused this client's TLS certificate ({security.cert}): {_TRUSTED_CERT}")


def _reason(detail: str) -> str:
    """The last, most specific part of a gRPC handshake detail."""
    parts = [p.strip() for p in detail.split(": ") if p.strip() and p.strip() != "OK"]
    return parts[-1] if parts else detail
