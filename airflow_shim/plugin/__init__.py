"""The Airflow plugin: Airflow's own backfill API and UI, answered by the sidecar.

Installed with the ``shim`` extra (entry point ``airflow.plugins``: ``airflow_sidecar``) and
switched on by ``SIDECAR_TARGET`` in the api-server's environment. Its root middleware
answers ``POST /api/v2/backfills``, ``POST /api/v2/backfills/dry_run`` and
``PUT /api/v2/backfills/{id}/pause|unpause|cancel`` through the sidecar, after Airflow's own
auth manager has authenticated and authorised the user (recorded as the triggering user, by
delegation); its page (``/sidecar/backfills``, in the UI under *Browse*) shows each backfill's
plan and progress. The entry point names :class:`airflow_shim.plugin._plugin.SidecarPlugin`
directly, so importing this package needs no Airflow; the plugin builds its middleware and
page lazily, in the api-server, so the scheduler (which loads every plugin too) never imports
Airflow's api-server modules because of it.
See the README's "Airflow's own UI and API".
"""
