"""What a caller may do: actions on DAGs, granted to principals and roles by a policy file.

The policy is a TOML file of rules; a call is allowed when any rule names the caller (by
principal or by one of its roles), the DAG (by a glob) and the action::

    [[rule]]
    principals = ["alice"]          # JWT sub or static-token principal; "*" = anyone authenticated
    roles = ["data-eng"]            # any of these roles
    dags = ["ml_*", "etl_daily"]    # fnmatch globs on the DAG id (case-sensitive)
    actions = ["read", "create", "pause", "cancel"]   # or ["*"]

``pause`` covers pause and unpause. The scheduler-facing Tick is not a DAG action: it needs
the role ``scheduler`` and no rule can grant it otherwise. Without a policy file every
authenticated caller may do every DAG action (:meth:`Policy.allow_all`).
"""

from __future__ import annotations

import enum
import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.auth._tokens import Principal

#: The role the scheduler's shim must hold to call ``SchedulerService.Tick``.
SCHEDULER_ROLE = "scheduler"


class Action(enum.StrEnum):
    """What a call does to a DAG's backfills (``tick`` is the scheduler's, not a DAG action)."""

    READ = "read"
    CREATE = "create"
    PAUSE = "pause"
    CANCEL = "cancel"
    TICK = "tick"


DAG_ACTIONS = frozenset({Action.READ, Action.CREATE, Action.PAUSE, Action.CANCEL})


@dataclass(frozen=True)
class Rule:
    """One grant: these principals or roles may do these actions on DAGs matching these globs."""

    principals: frozenset[str]
    roles: frozenset[str]
    dags: tuple[str, ...]
    actions: frozenset[Action]

    def names(self, principal: Principal) -> bool:
        """Whether the rule applies to ``principal``."""
        return (
            "*" in self.principals or principal.name in self.principals or bool(self.roles & principal.roles)
        )

    def matches(self, dag_id: str) -> bool:
        """Whether the rule covers ``dag_id``."""
        return any(fnmatch.fnmatchcase(dag_id, pattern) for pattern in self.dags)


@dataclass(frozen=True)
class Policy:
    """The rules of a policy file; the answer to "may this caller do this to this DAG?"."""

    rules: tuple[Rule, ...]

    @classmethod
    def allow_all(cls) -> Policy:
        """Every authenticated caller may do every DAG action (the default without ``--policy``)."""
        return cls((Rule(frozenset({"*"}), frozenset(), ("*",), DAG_ACTIONS),))

    def allows(self, principal: Principal, action: Action, dag_id: str) -> bool:
        """Whether ``principal`` may do ``action`` on ``dag_id``."""
        if action is Action.TICK:
            return SCHEDULER_ROLE in principal.roles
        return any(action in r.actions and r.names(principal) and r.matches(dag_id) for r in self.rules)

    def globs(self, principal: Principal, action: Action) -> tuple[str, ...]:
        """The DAG globs of every rule granting ``principal`` the DAG action ``action``."""
        found: dict[str, None] = {}
        for rule in self.rules:
            if action in rule.actions and rule.names(principal):
                found.update(dict.fromkeys(rule.dags))
        return tuple(found)

    def grants_any(self, principal: Principal, action: Action) -> bool:
        """Whether ``principal`` may do ``action`` on at least some DAG."""
        if action is Action.TICK:
            return SCHEDULER_ROLE in principal.roles
        return any(action in r.actions and r.names(principal) for r in self.rules)


def _strings(entry: dict[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: {key} must be a list of non-empty strings")
    return list(value)


def parse_policy(data: dict[str, Any], source: str) -> Policy:
    """A policy from parsed TOML (``source`` names it in errors).

    Raises:
        ValueError: an unknown key or action, or a rule that names nobody or no DAG.
    """
    if set(data) - {"rule"} or not isinstance(data.get("rule", []), list):
        raise ValueError(f"policy {source}: expected only [[rule]] tables, found {sorted(set(data))}")
    rules: list[Rule] = []
    for number, entry in enumerate(data.get("rule", []), 1):
        where = f"policy {source}, rule #{number}"
        extra = set(entry) - {"principals", "roles", "dags", "actions"}
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}")
        principals, roles = _strings(entry, "principals", where), _strings(entry, "roles", where)
        dags, action_names = _strings(entry, "dags", where), _strings(entry, "actions", where)
        if not principals and not roles:
            raise ValueError(f"{where}: names no principals and no roles")
        if not dags or not action_names:
            raise ValueError(f"{where}: needs dags and actions")
        actions: set[Action] = set()
        for name in action_names:
            if name == "*":
                actions |= DAG_ACTIONS
            elif name in {a.value for a in DAG_ACTIONS}:
                actions.add(Action(name))
            else:
                allowed = ", ".join(sorted(a.value for a in DAG_ACTIONS))
                raise ValueError(f"{where}: unknown action {name!r} (one of {allowed}, or *)")
        rules.append(Rule(frozenset(principals), frozenset(roles), tuple(dags), frozenset(actions)))
    return Policy(tuple(rules))


def load_policy(path: Path) -> Policy:
    """Read a TOML policy file.

    Raises:
        ValueError: unreadable or malformed (one line, naming the file and the rule).
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"policy {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"policy {path}: not valid TOML: {exc}") from exc
    return parse_policy(data, str(path))
