"""Resolving a backfill's task subset against its DAG, off the event loop."""

from __future__ import annotations

import asyncio

from sidecar.catalog import DagTemplate, TaskSelection, resolve_selection

__all__ = ["selected_tasks"]


async def selected_tasks(template: DagTemplate, selection: TaskSelection | None) -> tuple[str, ...]:
    """The task ids ``selection`` runs (empty: no subset, every task runs).

    The regex is matched in a thread with the GIL released and under a deadline
    (:data:`sidecar.catalog.MATCH_SECONDS`), so neither a large DAG nor a pathological
    pattern holds the event loop.

    Raises:
        InvalidTaskSelection: see :func:`sidecar.catalog.resolve_selection`.
    """
    if selection is None:
        return ()
    return await asyncio.to_thread(resolve_selection, template, selection)
