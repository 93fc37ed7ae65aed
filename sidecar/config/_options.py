"""The shape of a flag whose default is its ``SIDECAR_*`` variable, and whose help names it.

``serve``'s options (``_server``) and its webhook options (``_webhooks``) are declared with
these, so a flag, its variable and the ``; env SIDECAR_...`` at the end of its help are
written once: the variable's name cannot differ between the default and the help.
"""

from __future__ import annotations

import argparse

from sidecar.config import _env
from sidecar.config._env import Environ

__all__ = ["switch_option", "text_option"]

#: The note on options that carry a secret: a flag's value shows in ``ps``, a variable's does not.
_SECRET_NOTE = " (preferred: flags show in ps)"


def text_option(
    parser: argparse._ActionsContainer,
    env: Environ,
    flag: str,
    variable: str,
    help: str,
    *,
    default: str | None = None,
    metavar: str | None = None,
    secret: bool = False,
) -> None:
    """``flag`` taking a string: ``variable`` (else ``default``) by default; help ends ``; env VARIABLE``."""
    note = _SECRET_NOTE if secret else ""
    parser.add_argument(
        flag,
        metavar=metavar,
        default=_env.text(env, variable, default),
        help=f"{help}; env {variable}{note}",
    )


def switch_option(
    parser: argparse._ActionsContainer, env: Environ, flag: str, variable: str, help: str
) -> None:
    """An on/off ``flag``, on by default when ``variable`` is 1/true/yes/on; help ends ``; env VARIABLE=1``."""
    parser.add_argument(
        flag,
        action="store_true",
        default=_env.enabled(env, variable),
        help=f"{help}; env {variable}=1",
    )
