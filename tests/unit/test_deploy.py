"""The deployment examples stay true to the code: every flag and variable they use exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from sidecar.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def values() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "helm" / "values-airflow-sidecar.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_sidecar_container_args_parse_with_the_real_cli() -> None:
    (container,) = values()["scheduler"]["extraContainers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    assert args.listen == "0.0.0.0:50051"
    assert args.ops_listen == "0.0.0.0:9464"
    probes = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
    assert probes == {"/readyz", "/healthz"}
    env = {e["name"] for e in container["env"]}
    assert {"SIDECAR_DATABASE_URL", "SIDECAR_JWT_SECRET"} <= env


def test_scheduler_runs_the_shim() -> None:
    scheduler = values()["scheduler"]
    assert "exec airflow-sidecar scheduler" in scheduler["args"][-1]
    assert {e["name"] for e in scheduler["env"]} >= {"SIDECAR_TARGET", "SIDECAR_TOKEN"}


def test_dockerfile_command_parses_with_the_real_cli() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \["airflow-sidecar"\]$', text, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert entry and cmd
    args = build_parser().parse_args(shlex.split(" ".join(yaml.safe_load(cmd.group(1)))))
    assert args.command == "serve" and args.log_format == "json"
