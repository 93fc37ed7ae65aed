"""Help texts: every option described, every command with an example, one connection group, the shim's settings.

The help of each command is a snapshot (``snapshots/help_*.txt``), so a change is a reviewed
diff; the walk over the real parser fails as soon as an option lacks its help string.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.cli import build_parser
from sidecar.cli._parser import _commands
from sidecar.config import SHIM_VARIABLES, shim_help
from tests.newcomer.snapshots import assert_snapshot

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [path for path, _ in _commands(build_parser())]


def _parser(path: str) -> argparse.ArgumentParser:
    return dict(_commands(build_parser()))[path]


@pytest.mark.parametrize("path", COMMANDS)
def test_every_option_has_a_help_string_and_every_command_an_example(path: str) -> None:
    parser = _parser(path)
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and (not a.help or a.help == argparse.SUPPRESS)
    ]
    assert missing == [], f"`airflow-sidecar {path}`: options without help: {missing}"
    assert parser.epilog and parser.epilog.startswith("example:"), f"`airflow-sidecar {path}` has no example"


def test_the_walk_sees_an_option_without_help() -> None:
    """The check above can fail: an option added without help is caught."""
    parser = build_parser()
    dict(_commands(parser))["backfill create"].add_argument("--new-flag")
    create = dict(_commands(parser))["backfill create"]
    assert [a for a in create._actions if a.dest == "new_flag" and not a.help]


@pytest.mark.parametrize("path", ["backfill", "backfill create", "backfill list", "doctor", "gateway"])
def test_connection_options_are_one_documented_group(path: str) -> None:
    groups = [
        g
        for g in _parser(path)._action_groups
        if any("--target" in a.option_strings for a in g._group_actions)
    ]
    assert [g.title for g in groups] == ["connection to the sidecar"]


@pytest.mark.parametrize("path", COMMANDS)
def test_help_snapshot(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    for name in [k for k in os.environ if k.startswith("SIDECAR_") and k != "SIDECAR_UPDATE_SNAPSHOTS"]:
        monkeypatch.delenv(name)  # their values would show as defaults
    text = _parser(path).format_help()
    assert_snapshot("help_" + (path.replace(" ", "_") or "airflow-sidecar"), text)


def test_every_shim_variable_is_listed() -> None:
    """Each SIDECAR_* name the shim's settings read appears in ``scheduler --help``."""
    listed = {name for name, _ in SHIM_VARIABLES}
    read = set()
    for module in ("sidecar/config/_shim.py", "sidecar/config/_client.py"):
        source = (ROOT / module).read_text()
        for body in re.findall(r"def from_env\(.*?(?=\n    def |\n\n\n)", source, re.S):
            read |= set(re.findall(r'"(SIDECAR_[A-Z_]+)"', body))
    assert "SIDECAR_TICK_DEADLINE" in read and "SIDECAR_TOKEN_FILE" in read
    assert read - listed == set()


def test_scheduler_help_lists_the_shim_settings_then_airflows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(shim_help())
    for name, _ in SHIM_VARIABLES:
        assert name in result.stdout
    assert "airflow scheduler" in result.stdout[len(shim_help()) :]
    assert_snapshot("help_scheduler_shim_section", shim_help())
