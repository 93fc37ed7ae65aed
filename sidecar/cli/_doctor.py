"""``airflow-sidecar doctor``: check a set-up from end to end and say, in plain words, what to fix.

It reads the settings ``serve``, the CLI and the scheduler shim read (flags, then ``SIDECAR_*``
variables, through :mod:`sidecar.config`) and checks, in order: the database (reachable, an
Airflow schema the sidecar supports, its clock), the sidecar (reachable, the token accepted,
with ``--as-scheduler`` the role ``scheduler``) and, with ``--as-scheduler``, what the shim
would read from this environment. One line per check; a failed check skips those that depend
on it; the exit code is 1 and the last line names the first thing to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.auth import check_jwt_secret
from sidecar.channel import open_channel
from sidecar.cli._problems import (
    TOKEN_ADVICE,
    database_may_come_up,
    database_problem,
    missing_file_problem,
    missing_sqlite_file,
    start_advice,
)
from sidecar.cli._tls import tls_problem
from sidecar.config import (
    ClientSecurity,
    ClientSettings,
    Environ,
    ShimSettings,
    add_connection_arguments,
    add_database_argument,
    enabled,
)
from sidecar.errors import SchemaMismatch
from sidecar.store import check_database, connect

#: Clock difference (seconds) worth a warning: JWTs allow 10 s of skew, run dates compare clocks.
CLOCK_WARNING = 5.0
#: Seconds each probe may take (a database or sidecar that does not answer is a finding).
PROBE_TIMEOUT = 10.0
#: Seconds the TLS handshake that tells a TLS server from one going down may take.
_TLS_PROBE_TIMEOUT = 3.0
#: gRPC codes of a sidecar not listening or not answering yet (it may be starting): worth waiting for.
_NOT_YET = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class Finding:
    """One checked thing: its status (ok, warn, FAIL, skip), its name and what was found or is to do."""

    status: str
    check: str
    message: str
    transient: bool = False
    """A failure waiting may cure (the database or the sidecar not up yet); else it is a setting."""

    def line(self) -> str:
        """The finding as one aligned line."""
        return f"{self.status:<4}  {self.check:<9} {self.message}"


def add_doctor_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``doctor`` subcommand: the database option of ``serve`` and the shared connection group."""
    doctor = commands.add_parser(
        "doctor",
        help="check the database, the sidecar, the token and the shim; say what to fix",
        description="Check a set-up with the settings serve, the CLI and the shim read (flags, then "
        "SIDECAR_* variables): the database (reachable, Airflow schema supported, clock), the "
        "sidecar (reachable, token accepted, role scheduler with --as-scheduler) and the shim's "
        "environment. Exit code 1 and the first thing to fix when a check fails.",
        epilog="examples:\n"
        "  airflow-sidecar doctor --database-url postgresql://airflow:***@db:5432/airflow\n"
        "  # where the scheduler runs, with its environment (SIDECAR_TARGET, SIDECAR_TOKEN):\n"
        "  SIDECAR_DATABASE_URL=... airflow-sidecar doctor --as-scheduler",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_argument(doctor)
    doctor.add_argument(
        "--as-scheduler",
        action="store_true",
        help="check as the scheduler shim: its token must hold the role scheduler, and SIDECAR_TARGET "
        "and the token must be set in this environment as the shim reads them",
    )
    doctor.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="repeat the checks while only the database or the sidecar is not up yet, for up to SECONDS "
        "(e.g. right after starting serve); a wrong setting fails at once",
    )
    add_connection_arguments(doctor, timeout=PROBE_TIMEOUT)


async def _database_findings(url: str | None) -> list[Finding]:
    if not url:
        return [
            Finding("FAIL", "database", "no database URL: pass --database-url or set SIDECAR_DATABASE_URL")
        ]
    missing = missing_sqlite_file(url)
    if missing is not None:
        return [Finding("FAIL", "database", missing_file_problem(missing))]
    try:
        database = connect(url, pool_size=1)
    except ValueError as exc:
        return [Finding("FAIL", "database", str(exc))]
    try:
        before = dt.datetime.now(dt.UTC)
        report = await asyncio.wait_for(check_database(database), PROBE_TIMEOUT)
        after = dt.datetime.now(dt.UTC)
    except Exception as exc:
        problem = database_problem(exc, url)
        if problem is None:
            raise
        name = "schema" if isinstance(exc, SchemaMismatch) else "database"
        findings = [Finding("ok", "database", "reachable")] if name == "schema" else []
        return [*findings, Finding("FAIL", name, problem, transient=database_may_come_up(exc))]
    finally:
        await database.dispose()
    findings = [
        Finding("ok", "database", "reachable"),
        Finding("ok", "schema", f"Airflow {report.airflow_version} (revision {report.revision})"),
    ]
    if report.clock is None:
        findings.append(Finding("ok", "clock", "SQLite uses this machine's clock"))
    else:
        local = before + (after - before) / 2
        skew = (report.clock - local).total_seconds()
        text = (
            f"the database's clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} this machine's"
        )
        if abs(skew) > CLOCK_WARNING:
            findings.append(
                Finding(
                    "warn", "clock", f"{text}; sync both with NTP (JWTs allow 10 s, run dates compare clocks)"
                )
            )
        else:
            findings.append(Finding("ok", "clock", f"within {CLOCK_WARNING:g} s of the database's"))
    return findings


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if hasattr(exc, "code") else None


def _detail(exc: grpc.RpcError) -> str:
    return str(exc.details()) if hasattr(exc, "details") else str(exc)


def _sidecar_findings(settings: ClientSettings, as_scheduler: bool) -> tuple[list[Finding], bool]:
    """Reachable, token accepted, role; and whether the sidecar took a call without any token."""
    target, timeout = settings.target, settings.timeout
    try:
        channel = open_channel(target, settings.security)
    except ValueError as exc:
        return [Finding("FAIL", "sidecar", str(exc))], False
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            if _code(exc) in _NOT_YET:
                # A TLS mismatch is UNAVAILABLE too, but (mostly) a setting: waiting cannot cure it.
                tls = tls_problem(_detail(exc), target, settings.security, min(timeout, _TLS_PROBE_TIMEOUT))
                if tls is not None:
                    return [Finding("FAIL", "sidecar", tls.line, transient=tls.transient)], False
                return [Finding("FAIL", "sidecar", start_advice(target), transient=True)], False
            return [Finding("FAIL", "sidecar", f"{target} answered {_detail(exc)}")], False
        found = [Finding("ok", "sidecar", f"serving at {target}")]
        has_token = settings.security.token is not None
        try:
            backfill_pb2_grpc.BackfillServiceStub(channel).ListBackfills(
                backfill_pb2.ListBackfillsRequest(page_size=1), timeout=timeout
            )
            token = Finding("ok", "token", "accepted" if has_token else "none sent, none needed (--no-auth)")
        except grpc.RpcError as exc:
            if _code(exc) == grpc.StatusCode.PERMISSION_DENIED:
                token = Finding("ok", "token", f"accepted (it may not list backfills: {_detail(exc)})")
            elif not has_token:
                return [*found, Finding("FAIL", "token", f"none sent; {TOKEN_ADVICE}")], False
            elif _code(exc) in _NOT_YET:
                return [
                    *found,
                    Finding("FAIL", "token", f"not answered: {_detail(exc)}", transient=True),
                ], False
            else:
                advice = "mint a new one with the sidecar's secret (airflow-sidecar token jwt) or use a listed token"
                return [*found, Finding("FAIL", "token", f"refused: {_detail(exc)}; {advice}")], False
        found.append(token)
        open_access = not has_token
        if not as_scheduler:
            found.append(Finding("skip", "role", "scheduler role not checked (add --as-scheduler)"))
            return found, open_access
        try:
            # Tick is idempotent and the sidecar ticks itself every few seconds: a harmless probe.
            scheduler_pb2_grpc.SchedulerServiceStub(channel).Tick(
                scheduler_pb2.TickRequest(scheduler_id="airflow-sidecar-doctor"), timeout=timeout
            )
        except grpc.RpcError as exc:
            if _code(exc) == grpc.StatusCode.PERMISSION_DENIED:
                advice = "the shim's token needs it: airflow-sidecar token jwt --subject S --role scheduler"
                return [
                    *found,
                    Finding("FAIL", "role", f"no role scheduler ({_detail(exc)}); {advice}"),
                ], False
            failed = Finding("FAIL", "role", f"Tick failed: {_detail(exc)}", transient=_code(exc) in _NOT_YET)
            return [*found, failed], False
        found.append(Finding("ok", "role", "may Tick (role scheduler)"))
        return found, open_access


def _shim_findings(
    checked: ClientSettings, environ: Environ, open_access: bool, *, answered: bool = True
) -> list[Finding]:
    """What the shim reads from this environment, against what was checked.

    ``answered``: whether the sidecar answered; if not (not up yet), whether it needs a token
    is not known, and a missing token is a failure that waiting may cure.
    """
    try:
        shim = ShimSettings.from_env(environ)
        security = ClientSecurity.from_env(environ)
    except ValueError as exc:
        return [Finding("FAIL", "shim", f"{exc} (the scheduler's environment)")]
    if shim.target != checked.target:
        return [
            Finding(
                "FAIL",
                "shim",
                f"the shim would call {shim.target} (SIDECAR_TARGET), not {checked.target}: "
                f"export SIDECAR_TARGET={checked.target} where the scheduler runs",
            )
        ]
    if security.token is None and not open_access:
        return [
            Finding(
                "FAIL",
                "shim",
                "the shim would send no token (SIDECAR_TOKEN and SIDECAR_TOKEN_FILE are unset) and its "
                "Ticks would be refused: export SIDECAR_TOKEN where the scheduler runs",
                transient=not answered,
            )
        ]
    if security.token != checked.security.token:
        return [
            Finding(
                "FAIL",
                "shim",
                "the shim would send another token than the one checked (--token/--token-file): "
                "export that token as SIDECAR_TOKEN where the scheduler runs",
            )
        ]
    auth = "token from SIDECAR_TOKEN" if environ.get("SIDECAR_TOKEN") else "token from SIDECAR_TOKEN_FILE"
    if security.token is None:
        auth = "no token"
    tls = "TLS" if security.uses_tls else "plaintext"
    return [
        Finding("ok", "shim", f"would call {shim.target} ({tls}, {auth}, deadline {shim.tick_deadline:g} s)")
    ]


def run_doctor(args: argparse.Namespace, environ: Environ | None = None) -> int:
    """Run every check, print one line each, and return 0, or 1 with the first thing to fix.

    With ``--wait S`` the checks are repeated (every second) while only transient checks fail
    (the database or the sidecar not up yet), for up to ``S`` seconds, so a script can start
    the sidecar and check it on the next line. A failure of a setting (a short JWT secret, a
    wrong database name, a refused token) ends the wait at once: waiting cannot cure it.
    """
    deadline = time.monotonic() + max(args.wait, 0.0)
    while True:
        findings = _check(args, environ)
        failed = [f for f in findings if f.status == "FAIL"]
        if not failed or time.monotonic() >= deadline:
            break
        lasting = [f for f in failed if not f.transient]
        if lasting:
            print(f"not waiting: waiting cannot fix the {lasting[0].check} check", file=sys.stderr)
            break
        time.sleep(1.0)
    report(findings)
    return 1 if any(f.status == "FAIL" for f in findings) else 0


def _secret_findings(environ: Environ) -> list[Finding]:
    """``SIDECAR_JWT_SECRET`` in this environment, checked as ``serve`` checks it at start-up.

    Airflow generates a 16-byte ``[api_auth] jwt_secret``, which ``serve`` refuses: said here,
    a set-up that started ``serve`` in the background learns why nothing answers.
    """
    secret = environ.get("SIDECAR_JWT_SECRET", "")
    if not secret:
        return []
    if enabled(environ, "SIDECAR_ALLOW_WEAK_JWT_SECRET"):
        return [
            Finding("warn", "secret", "SIDECAR_JWT_SECRET is not checked (SIDECAR_ALLOW_WEAK_JWT_SECRET=1)")
        ]
    try:
        check_jwt_secret(secret, "HS512")
    except ValueError as exc:
        return [Finding("FAIL", "secret", f"serve refuses SIDECAR_JWT_SECRET: {exc}")]
    return [Finding("ok", "secret", "SIDECAR_JWT_SECRET is long enough for HS512")]


def _check(args: argparse.Namespace, environ: Environ | None) -> list[Finding]:
    env = os.environ if environ is None else environ
    findings = asyncio.run(_database_findings(args.database_url))
    findings += _secret_findings(env)
    try:
        settings = ClientSettings.from_args(args, env, timeout=PROBE_TIMEOUT)
    except ValueError as exc:
        findings.append(Finding("FAIL", "settings", str(exc)))
    else:
        sidecar, open_access = _sidecar_findings(settings, args.as_scheduler)
        findings += sidecar
        if args.as_scheduler:
            answered = not any(f.status == "FAIL" and f.transient for f in sidecar)
            findings += _shim_findings(settings, env, open_access, answered=answered)
        else:
            findings.append(Finding("skip", "shim", "the shim's settings not checked (add --as-scheduler)"))
    return _with_skips(findings, args.as_scheduler)


#: Every check in order, and the check whose failure skips it.
_DEPENDS = {
    "database": None,
    "schema": "database",
    "clock": "database",
    "secret": None,
    "sidecar": None,
    "token": "sidecar",
    "role": "token",
    "shim": "sidecar",
}


def _with_skips(findings: list[Finding], as_scheduler: bool) -> list[Finding]:
    """The findings in check order, a ``skip`` line for each check a failure left out."""
    by_check = {f.check: f for f in findings}
    if "settings" in by_check:
        return findings
    ordered = []
    for check, depends in _DEPENDS.items():
        if check in by_check:
            ordered.append(by_check[check])
        elif depends is not None:
            ordered.append(Finding("skip", check, f"not checked (the {depends} check failed first)"))
    return ordered


def report(findings: Sequence[Finding]) -> None:
    """Print the findings, and the first thing to fix if any failed."""
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.status == "FAIL"]
    if failed:
        print(f"first thing to fix: {failed[0].check}: {failed[0].message}", file=sys.stderr)
    else:
        print("everything checked is ready")
