"""Webhook settings of ``serve``: the signing secret, which hosts events may go to, and retries."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from sidecar.config import _env
from sidecar.config._env import Environ
from sidecar.config._options import switch_option, text_option

__all__ = ["WebhookSettings", "add_webhook_arguments"]


@dataclass(frozen=True)
class WebhookSettings:
    """How ``serve`` sends backfill events to webhooks (off until a secret is set)."""

    secret: str | None = None
    """HMAC-SHA256 key of the ``X-Sidecar-Signature`` header; None: webhooks are refused."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (``hooks.slack.com``) or ``*.`` suffixes (``*.example.com``) a webhook may name;
    empty: any host whose addresses are public."""
    allow_private: bool = False
    """Let webhooks reach loopback, private, link-local and other non-public addresses."""
    allow_http: bool = False
    """Accept ``http://`` webhook URLs (signed, but not encrypted); by default ``https://`` only."""
    max_attempts: int = 10
    """Attempts per event before it is given up (about 1.5 hours of backoff)."""
    timeout: float = 10.0
    """Seconds one delivery may take."""

    @property
    def enabled(self) -> bool:
        """Whether backfills may have webhooks."""
        return bool(self.secret)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WebhookSettings:
        """Settings from the options of :func:`add_webhook_arguments`."""
        hosts = tuple(h.strip().lower() for h in (args.webhook_allowed_hosts or "").split(",") if h.strip())
        return cls(
            secret=args.webhook_secret or None,
            allowed_hosts=hosts,
            allow_private=args.webhook_allow_private,
            allow_http=args.webhook_allow_http,
        )


def add_webhook_arguments(serve: argparse._ActionsContainer, environ: Environ | None = None) -> None:
    """``serve``'s webhook options, each with its ``SIDECAR_WEBHOOK_*`` variable."""
    env = _env.environment(environ)
    text_option(
        serve,
        env,
        "--webhook-secret",
        "SIDECAR_WEBHOOK_SECRET",
        "key that signs every webhook request (HMAC-SHA256, header X-Sidecar-Signature); webhooks are "
        "refused until it is set",
        secret=True,
    )
    text_option(
        serve,
        env,
        "--webhook-allowed-hosts",
        "SIDECAR_WEBHOOK_ALLOWED_HOSTS",
        "comma-separated hosts (or *.suffixes) webhooks may name (default: any public host)",
        metavar="HOSTS",
    )
    switch_option(
        serve,
        env,
        "--webhook-allow-private",
        "SIDECAR_WEBHOOK_ALLOW_PRIVATE",
        "let webhooks reach loopback and private addresses (refused by default: SSRF)",
    )
    switch_option(
        serve,
        env,
        "--webhook-allow-http",
        "SIDECAR_WEBHOOK_ALLOW_HTTP",
        "accept http:// webhook URLs (default: https:// only)",
    )
