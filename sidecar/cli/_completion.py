"""Shell completion: ``airflow-sidecar completion bash|zsh`` prints a script to source.

argcomplete completes from the real parser, so every subcommand and flag is offered as soon
as it exists; the printed script only hooks the shell up to it.
"""

from __future__ import annotations

import argparse

import argcomplete
from argcomplete.shell_integration import shellcode

SHELLS = ("bash", "zsh", "fish")


def add_completion_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``completion`` subcommand."""
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description='Print a completion script: eval "$(airflow-sidecar completion bash)" in ~/.bashrc '
        "(zsh: in ~/.zshrc; fish: airflow-sidecar completion fish | source).",
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to print the script for")


def completion_script(shell: str, prog: str = "airflow-sidecar") -> str:
    """The completion script of ``shell`` for the command ``prog``."""
    script: str = shellcode([prog], shell=shell)
    return script


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request from the shell (a no-op unless the shell is asking)."""
    argcomplete.autocomplete(parser)
