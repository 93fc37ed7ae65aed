"""Hostile command-line values are one line and exit code 2, before any call: never a crash.

Found by a newcomer's session: ``--max-active-runs 99999999999`` (any int option past the
API's int32), a date whose UTC instant falls outside years 1..9999
(``--from-date 0001-01-01T00:00+05:00``) and ``--timeout -1``/``nan``/``inf`` each ended in
"unexpected ValueError/OverflowError" or a misleading DEADLINE_EXCEEDED. A weak
``SIDECAR_JWT_SECRET`` (Airflow generates a 16-byte one) made ``serve`` exit in the
background while ``doctor`` only said that nothing answered. And ``... --all | head`` ended
in "error: [Errno 32] Broken pipe".
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.cli import build_parser, main
from sidecar.cli._client import INT32_MAX, INT32_MIN, UsageError, int32, parse_when
from sidecar.cli._doctor import _secret_findings
from sidecar.config import seconds

#: The create options that go into int32 fields of ``Backfill``, by field.
INT_OPTIONS = {
    "--max-active-runs": "max_active_runs",
    "--max-failed-runs": "max_failed_runs",
    "--dag-max-active-runs": "dag_max_active_runs",
    "--priority": "priority",
}
NOWHERE = "127.0.0.1:9"  # nothing may be called: every case below fails before the channel


@given(st.sampled_from(sorted(INT_OPTIONS)), st.integers())
def test_any_integer_fits_the_field_or_is_a_usage_error(flag: str, value: int) -> None:
    if INT32_MIN <= value <= INT32_MAX:
        setattr(pb.Backfill(), INT_OPTIONS[flag], int32(value, flag))  # the wire type takes it
    else:
        with pytest.raises(UsageError, match=f"^{flag}: {value} is out of range"):
            int32(value, flag)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(sorted(INT_OPTIONS)),
    st.one_of(st.integers(max_value=INT32_MIN - 1), st.integers(min_value=INT32_MAX + 1)),
)
def test_out_of_range_integers_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], flag: str, value: int
) -> None:
    argv = ["backfill", "--target", NOWHERE, "create", "--dag-id", "d", "--from-date", "2025-01-01"]
    code = main([*argv, "--to-date", "2025-01-02", "--dry-run", flag, str(value)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(f"airflow-sidecar: error: {flag}: {value} is out of range (the API takes ")


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)


@given(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59)), offsets)
def test_any_iso_datetime_with_any_offset_parses_or_is_a_usage_error(
    when: dt.datetime, tz: dt.tzinfo
) -> None:
    aware = when.replace(tzinfo=tz)
    text = aware.isoformat()
    try:
        aware.astimezone(dt.UTC)
    except OverflowError:  # its UTC instant is in year 0 or 10000
        with pytest.raises(UsageError, match="is out of range"):
            parse_when(text, "--from-date")
        return
    parsed = parse_when(text, "--from-date")
    assert parsed == aware
    pb.Backfill().from_date.FromDatetime(parsed.astimezone(dt.UTC))  # what the CLI then does


@pytest.mark.parametrize("value", ["0001-01-01T00:00+05:00", "9999-12-31T23:00-05:00"])
def test_dates_past_the_calendar_in_utc_exit_2(capsys: pytest.CaptureFixture[str], value: str) -> None:
    argv = ["backfill", "--target", NOWHERE, "create", "--dag-id", "d", "--from-date", value]
    assert main([*argv, "--to-date", "2025-01-02", "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"airflow-sidecar: error: --from-date: {value!r} is out of range "
        "(its UTC instant is before year 1 or after 9999)\n"
    )


@given(st.one_of(st.floats(), st.text(max_size=8)))
def test_timeout_is_a_positive_finite_number_of_seconds(value: float | str) -> None:
    text = repr(value) if isinstance(value, float) else value
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number > 0:
        assert seconds(text) == number
        args = build_parser().parse_args(["backfill", "get", "1", "--timeout", text])
        assert args.timeout == number
    else:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["backfill", "get", "1", f"--timeout={text}"])
        assert exit_info.value.code == 2


@given(st.text(min_size=1, max_size=100))
def test_doctor_names_a_secret_serve_would_refuse(secret: str) -> None:
    (finding,) = _secret_findings({"SIDECAR_JWT_SECRET": secret})
    if len(secret.encode()) < 64:
        assert finding.status == "FAIL" and "HS512 needs at least 64" in finding.message
    else:
        assert finding.status == "ok"


def test_doctor_says_nothing_of_a_secret_it_is_not_given() -> None:
    assert _secret_findings({}) == []
    (finding,) = _secret_findings({"SIDECAR_JWT_SECRET": "short", "SIDECAR_ALLOW_WEAK_JWT_SECRET": "1"})
    assert finding.status == "warn"


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """``airflow-sidecar backfill create ... --dry-run --all | head``: no error line, SIGPIPE's code."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the first write fails
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sidecar", "completion", "bash"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(st.integers(min_value=3 * sys.getrecursionlimit(), max_value=20_000), st.sampled_from(['{"a":', "["]))
def test_conf_nested_past_the_parser_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], depth: int, opener: str
) -> None:
    closer = "}" if opener.startswith("{") else "]"
    conf = opener * depth + "1" + closer * depth
    argv = ["backfill", "--target", NOWHERE, "create", "--dag-id", "d", "--from-date", "2025-01-01"]
    assert main([*argv, "--to-date", "2025-01-02", "--dry-run", "--dag-run-conf", conf]) == 2
    assert capsys.readouterr().err == (
        "airflow-sidecar: error: --dag-run-conf nests too deeply (the sidecar takes 64 levels)\n"
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(st.one_of(st.integers(max_value=0), st.integers(min_value=254_000_000_000)))
def test_token_validity_must_be_a_real_future(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, valid_for: int
) -> None:
    """``token jwt --valid-for`` 0 or less mints an expired token; past year 9999 no library reads it."""
    monkeypatch.setenv("SIDECAR_JWT_SECRET", "s" * 64)
    assert main(["token", "jwt", "--subject", "me", "--valid-for", str(valid_for)]) == 2
    assert capsys.readouterr().err.startswith("airflow-sidecar: error: --valid-for must be from 1 to ")


def test_token_validity_of_a_year_mints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_JWT_SECRET", "s" * 64)
    assert main(["token", "jwt", "--subject", "me", "--valid-for", "31536000"]) == 0
    assert capsys.readouterr().out.count(".") == 2
