"""One configuration and one vocabulary: settings from flags and ``SIDECAR_*``, names, the shim's imports."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import sidecar.config
from sidecar.api._convert import backfill_id_of
from sidecar.cli import build_parser
from sidecar.config import (
    DEFAULT_TARGET,
    ClientSecurity,
    ClientSettings,
    GatewaySettings,
    ServerSettings,
    ShimSettings,
    add_connection_arguments,
)
from sidecar.errors import DOMAIN, InvalidArgument
from sidecar.names import MAX_BACKFILL_ID, backfill_name, parse_backfill_name

REPO = Path(__file__).resolve().parents[2]


def test_public_surface_is_sorted_and_complete() -> None:
    exported = sidecar.config.__all__
    assert len(set(exported)) == len(exported)
    assert all(hasattr(sidecar.config, name) for name in exported)
    public = {n for n in vars(sidecar.config) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(exported)


def test_the_shim_loads_no_server_module() -> None:
    """The scheduler imports the shim's client: it must not pull the sidecar's server stack in."""
    code = (
        "import sys, airflow_shim.client\n"
        "from airflow_shim.client import TickClient\n"
        "TickClient.from_env({}).close()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'croniter', 'jsonschema'}"
        " or m.startswith(('sidecar.store', 'sidecar.engine', 'sidecar.planning', 'sidecar.catalog',"
        " 'sidecar.auth', 'sidecar.api', 'sidecar.server')))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=REPO
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_one_default_target_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIDECAR_LISTEN", raising=False)
    assert DEFAULT_TARGET == "127.0.0.1:50051"
    assert build_parser().parse_args(["serve"]).listen == DEFAULT_TARGET
    assert ShimSettings.from_env({}).target == DEFAULT_TARGET
    assert ClientSettings.from_args(argparse.Namespace(), {}).target == DEFAULT_TARGET
    assert GatewaySettings().client.target == DEFAULT_TARGET
    assert ServerSettings(database_url="x").listen == DEFAULT_TARGET
    sources = [p for p in (REPO / "sidecar").rglob("*.py") if "_gen" not in p.parts]
    sources += list((REPO / "airflow_shim").rglob("*.py"))
    spelled = [p.relative_to(REPO) for p in sources if "127.0.0.1:50051" in p.read_text()]
    assert spelled == [Path("sidecar/config/_client.py")]


def test_shim_settings_from_env() -> None:
    assert ShimSettings.from_env({}) == ShimSettings()
    settings = ShimSettings.from_env(
        {
            "SIDECAR_TARGET": "10.0.0.1:1,10.0.0.2:1",
            "SIDECAR_TICK_DEADLINE": "2",
            "SIDECAR_BREAKER_THRESHOLD": "5",
            "SIDECAR_BREAKER_COOLDOWN": "7.5",
            "SIDECAR_SHIM_FAIRNESS": "OFF",
            "SIDECAR_MAX_RUNNING_BACKFILL_RUNS": " 4 ",
            "SIDECAR_SHIM_STATS_INTERVAL": "0",
        }
    )
    assert settings == ShimSettings("10.0.0.1:1,10.0.0.2:1", 2.0, 5, 7.5, False, 4, 0.0)
    assert ShimSettings.from_env({"SIDECAR_SHIM_FAIRNESS": "on"}).fairness
    assert ShimSettings.from_env({"SIDECAR_MAX_RUNNING_BACKFILL_RUNS": "0"}).max_running_backfill_runs == 0
    with pytest.raises(ValueError, match="SIDECAR_TICK_DEADLINE must be a number, got 'soon'"):
        ShimSettings.from_env({"SIDECAR_TICK_DEADLINE": "soon"})


def parse_connection(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    return parser.parse_args(argv)


def test_client_flags_win_over_the_environment(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    env = {
        "SIDECAR_TARGET": "env:1",
        "SIDECAR_TOKEN_FILE": str(tmp_path / "missing"),  # never read: a flag gives the token
        "SIDECAR_TLS_CA": "/env-ca.pem",
    }
    args = parse_connection(
        ["--target", "flag:2", "--token", "t", "--tls-cert", "c.pem", "--tls-key", "k.pem"]
    )
    settings = ClientSettings.from_args(args, env)
    assert settings == ClientSettings(
        "flag:2", 600.0, ClientSecurity("t", False, Path("/env-ca.pem"), Path("c.pem"), Path("k.pem"))
    )
    from_env = ClientSettings.from_args(
        parse_connection([]), {"SIDECAR_TARGET": "env:1", "SIDECAR_TLS": "yes"}
    )
    assert (from_env.target, from_env.security.uses_tls, from_env.timeout) == ("env:1", True, 600.0)
    from_file = ClientSettings.from_args(parse_connection(["--token-file", str(tmp_path / "token")]), {})
    assert from_file.security.token == "from-file"
    gateway = ClientSettings.from_args(parse_connection([]), {"SIDECAR_TOKEN": "x"}, timeout=60, token=False)
    assert (gateway.security.token, gateway.timeout) == (None, 60)


def test_the_cli_and_the_gateway_share_the_connection_group() -> None:
    def options(*words: str) -> set[str]:
        parser = build_parser()
        for word in words:
            parser = next(
                a.choices[word] for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            )
        group = next(g for g in parser._action_groups if g.title == "connection to the sidecar")
        return {o for a in group._group_actions for o in a.option_strings}

    tls = {"--target", "--timeout", "--tls", "--tls-ca", "--tls-cert", "--tls-key"}
    assert options("backfill", "list") == tls | {"--token", "--token-file"}
    assert options("gateway") == tls  # the gateway forwards its callers' tokens


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("backfills/1", 1),
        ("backfills/0", 0),
        (f"backfills/{MAX_BACKFILL_ID}", MAX_BACKFILL_ID),
        (f"backfills/{MAX_BACKFILL_ID + 1}", None),
        ("backfills/" + "9" * 400, None),
        ("backfills/-1", None),
        ("backfills/ 1", None),
        ("backfills/\u0661", None),  # an Arabic-Indic digit: isdigit() but not ASCII
        ("backfills/", None),
        ("backfill/1", None),
        ("dags/1", None),
        ("1", None),
    ],
)
def test_one_backfill_name_parser(name: str, expected: int | None) -> None:
    assert parse_backfill_name(name) == expected
    if expected is None:
        with pytest.raises(InvalidArgument, match=r"parent must look like backfills/<id>") as raised:
            backfill_id_of(name, "parent")
        assert raised.value.field == "parent"
    else:
        assert backfill_id_of(name) == expected
        assert backfill_name(expected) == name


def test_one_error_domain() -> None:
    import sidecar.api._errors
    import sidecar.auth

    assert DOMAIN == sidecar.auth.DOMAIN == sidecar.api._errors.DOMAIN == "airflow-sidecar.apache.org"
    literal = [
        p.relative_to(REPO)
        for p in (REPO / "sidecar").rglob("*.py")
        if "_gen" not in p.parts and '"airflow-sidecar.apache.org"' in p.read_text()
    ]
    assert literal == [Path("sidecar/errors.py")]
