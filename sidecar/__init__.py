"""airflow-sidecar: a gRPC scheduling sidecar that plans and writes Apache Airflow 3 backfills in bulk."""

__version__ = "0.1.0"
