"""Which webhook URLs a backfill may name (server-side request forgery), and what a delivery looks like."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import WebhookSettings
from sidecar.engine._notify import body_of, retry_delay, signature
from sidecar.engine._webhook_urls import check_webhook_url, shown_target
from sidecar.errors import FailedPrecondition, InvalidArgument
from sidecar.store import Delivery, RecordedEvent

ON = WebhookSettings(secret="s" * 32)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "https://example.com:8443/hook?x=1",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
    ],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    check_webhook_url(url, ON)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook", "must start with https://"),
        ("ftp://example.com/hook", "must start with https://"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("https://example.com/hook#frag", "fragment"),
        ("https:///hook", "must name a host"),
        ("https://example.com:0/hook", "port 0"),
        ("https://example.com:99999/hook", "not a valid URL"),
        ("https://localhost/hook", "loopback or private"),
        ("https://api.localhost/hook", "loopback or private"),
        ("https://127.0.0.1/hook", "loopback or private"),
        ("https://10.1.2.3/hook", "loopback or private"),
        ("https://169.254.169.254/latest/meta-data", "loopback or private"),
        ("https://[::1]/hook", "loopback or private"),
        ("https://[::ffff:10.0.0.1]/hook", "loopback or private"),
        ("https://[fe80::1]/hook", "loopback or private"),
        ("https://0.0.0.0/hook", "loopback or private"),
        ("https://224.0.0.1/hook", "loopback or private"),
        ("https://exa mple.com/hook", "printable ASCII"),
        ("https://exämple.com/hook", "printable ASCII"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
        ("", "needs a url"),
    ],
)
def test_unsafe_urls_are_refused_naming_the_field(url: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why) as refused:
        check_webhook_url(url, ON)
    assert refused.value.field == "backfill.webhook.url"


def test_without_a_secret_webhooks_are_refused() -> None:
    with pytest.raises(FailedPrecondition, match="SIDECAR_WEBHOOK_SECRET"):
        check_webhook_url("https://example.com/hook", WebhookSettings())


def test_the_operator_may_allow_http_private_addresses_and_name_the_hosts() -> None:
    loose = WebhookSettings(secret="s", allow_http=True, allow_private=True)
    check_webhook_url("http://127.0.0.1:8080/hook", loose)
    listed = WebhookSettings(secret="s", allowed_hosts=("hooks.slack.com", "*.example.com"))
    check_webhook_url("https://hooks.slack.com/x", listed)
    check_webhook_url("https://a.b.example.com/x", listed)
    for refused in ("https://example.com/x", "https://evil-example.com/x", "https://slack.com/x"):
        with pytest.raises(InvalidArgument, match="allowed hosts are"):
            check_webhook_url(refused, listed)


@given(st.ip_addresses())
def test_an_ip_literal_is_accepted_exactly_when_it_is_public(address: object) -> None:
    import ipaddress

    ip = ipaddress.ip_address(str(address))
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    url = f"https://{host}/hook"
    mapped = getattr(ip, "ipv4_mapped", None) or ip
    public = mapped.is_global and not mapped.is_multicast
    if public:
        check_webhook_url(url, ON)
    else:
        with pytest.raises(InvalidArgument):
            check_webhook_url(url, ON)


def test_callers_see_only_scheme_and_host() -> None:
    assert shown_target("https://hooks.slack.com/services/T0/B0/SECRET") == "https://hooks.slack.com/…"
    assert shown_target("http://127.0.0.1:8080/a?token=x") == "http://127.0.0.1:8080/…"


def _delivery(fmt: str) -> Delivery:
    payload = {
        "kind": "completed",
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "backfill": {"id": 7, "dag_id": "d", "from_date": "a", "to_date": "b"},
    }
    event = RecordedEvent(42, 7, "completed", dt.datetime(2025, 1, 1, tzinfo=dt.UTC), payload)
    return Delivery(event, "https://example.com/hook", fmt, 1)


def test_bodies_json_and_slack() -> None:
    assert json.loads(body_of(_delivery("json")))["id"] == 42
    assert json.loads(body_of(_delivery("json")))["backfill"]["id"] == 7
    text = json.loads(body_of(_delivery("slack")))["text"]
    assert "Backfill 7" in text and "`d`" in text and "completed" in text


@given(st.binary(max_size=200), st.integers(0, 2**33))
def test_signature_is_hmac_sha256_of_timestamp_dot_body(body: bytes, timestamp: int) -> None:
    expected = hmac.new(b"secret", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature("secret", timestamp, body) == f"sha256={expected}"


@given(st.integers(1, 50), st.floats(0, 1, exclude_max=True))
def test_retry_delay_grows_and_is_capped(attempt: int, jitter: float) -> None:
    delay = retry_delay(attempt, lambda: jitter)
    assert 2.5 <= delay <= 900 * 1.5
    assert retry_delay(attempt + 1, lambda: jitter) >= delay
