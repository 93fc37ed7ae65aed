"""A TLS mismatch between a client and the sidecar, told apart from a sidecar not up yet.

gRPC reports both as UNAVAILABLE. A client set to TLS that meets a plaintext server, or a
certificate that does not verify, shows in the status detail (the handshake failed). A
plaintext client that meets a TLS server only reads "Socket closed", as it would from a
server going down; one TLS handshake with the target (nothing verified, nothing sent after
it) tells whether the server speaks TLS. Waiting cures none of these: they are settings.
"""

from __future__ import annotations

import socket
import ssl

from sidecar.config import ClientSecurity

#: Where the client's TLS settings are, for the advice lines.
CLIENT_TLS = "--tls/--tls-ca/--tls-cert (SIDECAR_TLS, SIDECAR_TLS_CA, SIDECAR_TLS_CLIENT_CERT)"
#: What a client's TLS library says when the server does not answer the handshake in TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "wrong version number", "packet length too long")
#: What it says when the server's certificate does not verify.
_UNVERIFIED = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
#: What a TLS server may say after the handshake to a client that sent no certificate it wanted.
_CERT_REQUIRED = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "BAD_CERTIFICATE", "UNKNOWN_CA")


def _host_port(target: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` (or ``dns:///host:port``) target; None for others."""
    address = target.removeprefix("dns:///").removeprefix("dns:")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address or host.startswith(("unix", "ipv4", "ipv6")):
        return None
    return host.strip("[]"), int(port)


def server_speaks(target: str, timeout: float) -> str | None:
    """What the server at ``target`` answers a TLS handshake with, nothing verified.

    ``"tls"``: it speaks TLS; ``"tls-client-cert"``: TLS, and it hung up on (or refused) a
    client without a certificate; ``"plaintext"``: not TLS; None: nothing was learnt (no connection, say).
    """
    where = _host_port(target)
    if where is None:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # as gRPC offers it
    try:
        with (
            socket.create_connection(where, timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=where[0]) as tls,
        ):
            tls.settimeout(min(timeout, 1.0))
            try:
                # In TLS 1.3 a server that wanted a client certificate refuses after the
                # handshake: it hangs up (or says so) where another sends its HTTP/2 settings.
                if tls.recv(1) == b"":
                    return "tls-client-cert"
            except ssl.SSLError as exc:
                if any(mark in str(exc) for mark in _CERT_REQUIRED):
                    return "tls-client-cert"
            except OSError:  # nothing to read in time
                pass
            return "tls"
    except ssl.SSLError as exc:
        return "plaintext" if any(mark in str(exc) for mark in _NOT_TLS) else None
    except OSError:
        return None


def tls_problem(detail: str, target: str, security: ClientSecurity, timeout: float) -> str | None:
    """The TLS mismatch behind an UNAVAILABLE from ``target`` (its ``detail``), or None.

    Args:
        detail: the status detail gRPC gave.
        target: the sidecar's address.
        security: the client's settings (TLS or plaintext, a client certificate or not).
        timeout: seconds the probe handshake may take.
    """
    if security.uses_tls and any(mark in detail for mark in _NOT_TLS):
        return (
            f"{target} does not speak TLS, but this client is set to use TLS ({CLIENT_TLS}): unset "
            "them, or start serve with --tls-cert and --tls-key"
        )
    if security.uses_tls and "Hostname Verification" in detail:
        return (
            f"the TLS certificate of {target} does not name its host ({_reason(detail)}): use a --target "
            "(SIDECAR_TARGET) host that serve's certificate names, or add it to the certificate"
        )
    if security.uses_tls and any(mark in detail for mark in _UNVERIFIED):
        against = f"the CA in {security.ca}" if security.ca else "the system's root certificates"
        return (
            f"the TLS certificate of {target} does not verify against {against} ({_reason(detail)}): point "
            "--tls-ca (SIDECAR_TLS_CA) at the CA that signed serve's certificate"
        )
    if "connection refused" in detail.lower() or "resolv" in detail.lower():
        return None  # nothing listens (yet), or its name does not resolve (yet): not TLS
    speaks = server_speaks(target, timeout)
    if not security.uses_tls and speaks in ("tls", "tls-client-cert"):
        return (
            f"{target} speaks TLS, but this client is set to plaintext: set --tls (SIDECAR_TLS=1) or "
            "--tls-ca (SIDECAR_TLS_CA) to the CA that signed serve's certificate"
        )
    if security.uses_tls and security.cert is None and speaks == "tls-client-cert":
        return (
            f"{target} wants a TLS client certificate (mutual TLS): pass --tls-cert and --tls-key "
            "(SIDECAR_TLS_CLIENT_CERT, SIDECAR_TLS_CLIENT_KEY)"
        )
    return None


def _reason(detail: str) -> str:
    """The last, most specific part of a gRPC handshake detail."""
    parts = [p.strip() for p in detail.split(": ") if p.strip() and p.strip() != "OK"]
    return parts[-1] if parts else detail
