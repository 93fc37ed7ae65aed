"""The README stays a newcomer's page: short, the two commands, links that lead somewhere."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest

from sidecar.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 12 * 1024
    assert "./scripts/demo.sh" in text and "./scripts/test.sh" in text
    for page in ("security", "gateway", "operations", "benchmarks", "cli"):
        assert f"(docs/{page}.md)" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
        if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists()
    ]
    assert broken == []


def _bash_blocks(page: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_pasted_command_parses(page: Path) -> None:
    """Each ``airflow-sidecar`` line of a bash block, continuations joined, is a valid command line.

    An indented ``--option`` line after a line without ``\\`` would run as a command of its own.
    """
    for block in _bash_blocks(page):
        lines = block.splitlines()
        for before, line in itertools.pairwise(lines):
            if line.lstrip().startswith("--"):
                assert before.rstrip().endswith("\\"), f"{page.name}: a continuation without \\: {before!r}"
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            if not command.startswith("airflow-sidecar ") or command.startswith("airflow-sidecar scheduler"):
                continue
            argv = shlex.split(command, comments=True)
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                assert not exc.code, f"{page.name}: {command}"
