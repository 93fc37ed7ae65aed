"""Snapshot files for command output: compared after normalising what changes between runs.

Ports, per-process database names and temporary paths differ on every run; they are replaced
by placeholders before the comparison. ``SIDECAR_UPDATE_SNAPSHOTS=1`` rewrites the files (then
review the diff like code).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"

_RULES = (
    (re.compile(r"sidecar_t_[a-z0-9_]+_\d+"), "DBNAME"),
    (re.compile(r"(?:/private)?/tmp/[^\s'\")]+"), "TMP"),
    (re.compile(r"(127\.0\.0\.1|localhost):\d+"), r"\1:PORT"),
    (re.compile(r"\b\d+\.\d s (ahead of|behind)"), r"N s \1"),
)


def normalise(text: str, extra: Mapping[str, str] | None = None) -> str:
    """``text`` with run-specific values replaced by placeholders (``extra``: literal value -> name)."""
    for value, name in (extra or {}).items():
        text = text.replace(value, name)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def assert_snapshot(name: str, text: str, extra: Mapping[str, str] | None = None) -> None:
    """Compare ``text`` (normalised) with ``snapshots/<name>.txt``."""
    path = SNAPSHOTS / f"{name}.txt"
    actual = normalise(text, extra)
    if os.environ.get("SIDECAR_UPDATE_SNAPSHOTS") == "1":
        path.write_text(actual)
    assert path.exists(), f"no snapshot {path.name}: run with SIDECAR_UPDATE_SNAPSHOTS=1 and review it"
    assert actual == path.read_text(), f"output differs from {path.name}:\n{actual}"


def cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m sidecar ARGS`` with no ``SIDECAR_*`` variable inherited, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**base, "COLUMNS": "100", **(env or {})},
    )


def transcript(result: subprocess.CompletedProcess[str]) -> str:
    """Exit code, stdout and stderr as one text to snapshot."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
