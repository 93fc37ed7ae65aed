"""Reading a DAG's latest serialized version from Airflow's tables, cached by version and hash."""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.catalog import DagTemplate, parse_dag
from sidecar.store._tables import dag, dag_version, log_template, serialized_dag
from sidecar.store._versions import NEWEST, AirflowRowContract, contract_of


@dataclass(frozen=True)
class LoadedDag:
    """A DAG as the sidecar needs it to plan and write runs."""

    template: DagTemplate
    dag_version_id: uuid.UUID
    dag_hash: str
    bundle_version: str | None
    """``dag.bundle_version``, copied into new runs unless versioning is disabled."""
    allowed_run_types: list[str] | None
    """``dag.allowed_run_types`` (NULL means every type)."""
    is_paused: bool
    airflow: AirflowRowContract = NEWEST
    """The row contract of the database's Airflow version (its refusals, for the checks)."""


class DagCatalog:
    """Loads DAGs; parsing is cached by ``(dag_version_id, dag_hash)``, at most ``max_entries`` (LRU).

    Airflow rewrites a version's serialized row in place until task instances
    reference it, so the hash is part of the key.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._cache: dict[tuple[uuid.UUID, str], DagTemplate] = {}
        self._max_entries = max_entries

    async def load(
        self, conn: AsyncConnection, dag_id: str, version_id: uuid.UUID | None = None
    ) -> LoadedDag | None:
        """The latest serialized version of ``dag_id`` (or its version ``version_id``); None if none.

        A version's ``bundle_version`` here is the DAG's current one: a pinned backfill
        records its own at creation (:class:`sidecar.store.NewBackfill`).
        """
        query = (
            sa.select(
                serialized_dag.c.data,
                serialized_dag.c.data_compressed,
                serialized_dag.c.dag_hash,
                dag_version.c.id.label("version_id"),
                dag.c.bundle_version,
                # NULL (every run type) where the version has no such column (3.1).
                dag.c.allowed_run_types
                if contract_of(conn).has_column("dag", "allowed_run_types")
                else sa.null().label("allowed_run_types"),
                dag.c.is_paused,
            )
            .select_from(
                serialized_dag.join(dag_version, dag_version.c.id == serialized_dag.c.dag_version_id).join(
                    dag, dag.c.dag_id == dag_version.c.dag_id, isouter=True
                )
            )
            .where(dag_version.c.dag_id == dag_id)
            .order_by(dag_version.c.version_number.desc())
            .limit(1)
        )
        if version_id is not None:
            query = query.where(dag_version.c.id == version_id)
        row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        key = (row.version_id, row.dag_hash)
        template = self._cache.pop(key, None)
        if template is None:
            template = parse_dag(_decode(row.data, row.data_compressed))
        self._cache[key] = template  # most recently used last: the least recently used goes first
        if len(self._cache) > self._max_entries:
            self._cache.pop(next(iter(self._cache)))
        allowed = row.allowed_run_types
        if isinstance(allowed, str):
            allowed = json.loads(allowed)
        return LoadedDag(
            template=template,
            dag_version_id=row.version_id,
            dag_hash=row.dag_hash,
            bundle_version=None if template.disable_bundle_versioning else row.bundle_version,
            allowed_run_types=allowed,
            is_paused=bool(row.is_paused),
            airflow=contract_of(conn),
        )


def _decode(data: Any, compressed: bytes | None) -> dict[str, Any]:
    if data is not None:
        return json.loads(data) if isinstance(data, str | bytes) else dict(data)
    if compressed is None:
        raise ValueError("serialized_dag row holds neither data nor data_compressed")
    return dict(json.loads(zlib.decompress(compressed)))


async def latest_log_template_id(conn: AsyncConnection) -> int | None:
    """``max(log_template.id)``, which every new run records."""
    value = await conn.scalar(sa.select(sa.func.max(log_template.c.id)))
    return int(value) if value is not None else None


async def some_dag_id(conn: AsyncConnection) -> str | None:
    """A DAG with a serialized version, if any (the one last serialized; for ``serve``'s warm-up)."""
    found = await conn.scalar(
        sa.select(serialized_dag.c.dag_id).order_by(serialized_dag.c.last_updated.desc()).limit(1)
    )
    return None if found is None else str(found)
