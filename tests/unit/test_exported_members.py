"""Every package's public surface is curated (httpx's ``tests/test_exported_members.py`` habit).

For each package under ``sidecar/`` and ``airflow_shim/`` (the generated ``sidecar._gen`` aside):
``__all__`` is sorted the way ruff's RUF022 sorts it, holds no name twice, names only what
exists, and lists every public name its ``__init__`` imports, so nothing leaks out by accident
and nothing exported is forgotten. A package without ``__all__`` must import nothing public.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Packages whose ``__init__`` holds code rather than a facade, with the reason.
CODE_PACKAGES = {
    "sidecar.cli": "the command line's entry point (main) and its argument parser live in __init__",
}


def _packages() -> list[str]:
    found = []
    for top in ("sidecar", "airflow_shim"):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            package = ".".join(init.parent.relative_to(ROOT).parts)
            if not package.startswith("sidecar._gen"):
                found.append(package)
    return found


PACKAGES = _packages()


def _ruff_order(name: str) -> tuple[int, list[int | str]]:
    """RUF022's isort-style order: SCREAMING_CASE, then CamelCase, then the rest; natural within."""
    group = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    natural: list[int | str] = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return group, natural


def _imported_public_names(package: str) -> set[str]:
    """Public names bound by the module-level imports of the package's ``__init__``."""
    init = ROOT.joinpath(*package.split("."), "__init__.py")
    names = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.partition(".")[0] for alias in node.names}
    return {name for name in names if not name.startswith("_")}


def test_every_package_is_found() -> None:
    assert {"sidecar.auth", "sidecar.store", "sidecar.engine", "airflow_shim"} <= set(PACKAGES)
    assert set(CODE_PACKAGES) <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_unique_existing_and_complete(package: str) -> None:
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    imported = _imported_public_names(package)
    if exported is None:
        if package in CODE_PACKAGES:
            return
        assert not imported, f"{package} imports public names but has no __all__: {sorted(imported)}"
        return
    exported = list(exported)
    assert len(exported) == len(set(exported)), f"{package}.__all__ lists a name twice"
    assert exported == sorted(exported, key=_ruff_order), f"{package}.__all__ is not sorted"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what does not exist: {missing}"
    unexported = sorted(imported - set(exported))
    assert not unexported, f"{package} imports public names it does not export: {unexported}"


def test_the_order_is_ruffs() -> None:
    names = ["name_2", "Policy", "DOMAIN", "name_10", "AuthConfig", "X", "x"]
    assert sorted(names, key=_ruff_order) == ["DOMAIN", "AuthConfig", "Policy", "X", "name_2", "name_10", "x"]
