"""Which webhook URLs a backfill may name: checked when it is created, and again before each delivery.

A webhook makes the sidecar send requests to an address a caller chose, from inside the
platform's network: the classic server-side request forgery. So, unless the operator says
otherwise (``WebhookSettings``): ``https://`` only, no credentials in the URL, only the
allowed hosts when a list is set, and never a loopback, private, link-local, multicast or
reserved address, neither written as one nor resolved to one at delivery time (names are
resolved before each attempt, so a name that later points inside is refused then). Redirects
are not followed (a delivery answered with one fails).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

from sidecar.config import WebhookSettings
from sidecar.errors import FailedPrecondition, InvalidArgument

__all__ = ["MAX_URL_LENGTH", "check_webhook_url", "public_target", "shown_target"]

MAX_URL_LENGTH = 2048
_FIELD = "backfill.webhook.url"


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return not address.is_global or address.is_multicast


def check_webhook_url(url: str, settings: WebhookSettings) -> None:
    """A webhook URL a backfill may name (what can be told without resolving its host).

    Raises:
        FailedPrecondition: this sidecar sends no webhooks (no secret configured).
        InvalidArgument: naming ``backfill.webhook.url``.
    """
    if not settings.enabled:
        raise FailedPrecondition(
            "webhooks are not enabled on this sidecar: its operator sets SIDECAR_WEBHOOK_SECRET "
            "(the key that signs every request)"
        )
    if not url:
        raise InvalidArgument("the webhook needs a url", field=_FIELD)
    if len(url) > MAX_URL_LENGTH or not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidArgument(
            f"url must be printable ASCII without spaces, at most {MAX_URL_LENGTH} characters", field=_FIELD
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"url is not a valid URL: {exc}", field=_FIELD) from None
    schemes = ("https", "http") if settings.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidArgument(f"url must start with {' or '.join(s + '://' for s in schemes)}", field=_FIELD)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url must not carry a user name or password", field=_FIELD)
    if parts.fragment:
        raise InvalidArgument("url must not have a #fragment", field=_FIELD)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidArgument("url must name a host", field=_FIELD)
    if port == 0:
        raise InvalidArgument("url must not name port 0", field=_FIELD)
    if settings.allowed_hosts and not _host_allowed(host, settings.allowed_hosts):
        raise InvalidArgument(
            f"webhooks may not reach {host}: allowed hosts are {', '.join(settings.allowed_hosts)}",
            field=_FIELD,
        )
    if settings.allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise InvalidArgument("webhooks may not reach loopback or private addresses", field=_FIELD)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    if _address_refused(literal):
        raise InvalidArgument("webhooks may not reach loopback or private addresses", field=_FIELD)


async def public_target(url: str, settings: WebhookSettings) -> str | None:
    """Why a delivery to ``url`` must not be attempted now; None when it may be.

    Resolves the host (off the event loop, through the loop's resolver) and refuses it if
    any address it has is not public (unless ``allow_private``).
    """
    try:
        check_webhook_url(url, settings)
    except (InvalidArgument, FailedPrecondition) as exc:
        return str(exc)
    if settings.allow_private:
        return None
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    for *_, address in infos:
        if _address_refused(ipaddress.ip_address(str(address[0]).split("%", 1)[0])):
            return f"{host} resolves to a loopback or private address"
    return None


def shown_target(url: str) -> str:
    """What callers see of a webhook URL: scheme and host only (the path of a Slack URL is its secret)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return f"{parts.scheme}://{netloc}/…"
