"""Reading ``SIDECAR_*`` environment variables: the only place the sidecar looks at the environment.

Every setting has a flag and a variable; a flag wins, then the variable, then the safe
default of the settings dataclass. The helpers take the environment as a mapping, so tests
pass a dict and nothing reads ``os.environ`` behind their back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

Environ = Mapping[str, str]

_N = TypeVar("_N", int, float)

#: Spellings of "on" accepted by boolean variables (``SIDECAR_TLS=1``); anything else is off.
_TRUE = frozenset({"1", "true", "yes", "on"})
#: Spellings of "off" accepted by variables that are on unless turned off (``SIDECAR_SHIM_FAIRNESS``).
_FALSE = frozenset({"0", "false", "no", "off"})


def environment(environ: Environ | None) -> Environ:
    """``environ``, or the process environment when None."""
    return os.environ if environ is None else environ


def text(env: Environ, name: str, default: str | None = None) -> str | None:
    """The variable's value; ``default`` when unset or empty."""
    return env.get(name) or default


def path(env: Environ, name: str) -> Path | None:
    """The variable as a path; None when unset or empty."""
    value = env.get(name)
    return Path(value) if value else None


def enabled(env: Environ, name: str) -> bool:
    """Whether a boolean variable is set to 1/true/yes/on (off by default)."""
    return env.get(name, "").strip().lower() in _TRUE


def not_disabled(env: Environ, name: str) -> bool:
    """Whether a variable that is on by default was left on (only 0/false/no/off turn it off)."""
    return env.get(name, "").strip().lower() not in _FALSE


def number(env: Environ, name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    """A numeric variable; ``default`` when unset.

    Raises:
        ValueError: set but not a number of that kind (one line naming the variable).
    """
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def tristate(env: Environ, *names: str) -> bool | None:
    """The first of ``names`` that is set, as a boolean; None when none is set.

    Raises:
        ValueError: set to something other than true/false (one line naming the variable).
    """
    for name in names:
        value = env.get(name, "").strip().lower()
        if not value:
            continue
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return None
