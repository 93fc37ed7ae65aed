"""Shared helpers for the integration and end-to-end tests (real Airflow, real databases)."""
