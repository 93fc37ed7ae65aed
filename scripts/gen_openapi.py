#!/usr/bin/env python3
"""Write the REST gateway's OpenAPI document to ``docs/openapi.json``.

The gateway generates the same document at start-up (from the protos' HTTP bindings and the
Airflow-compatible routes) and serves it at ``/openapi.json``; this checked-in copy is for
readers and tools that cannot reach a running gateway. ``tests/integration/test_gateway.py``
fails when the copy is stale, like ``gen_protos.py --check`` for the protobuf code.

Usage:
    python scripts/gen_openapi.py          # regenerate
    python scripts/gen_openapi.py --check  # exit 1 if the copy is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "openapi.json"


def render() -> str:
    """The document as stable, indented JSON."""
    sys.path.insert(0, str(ROOT))
    from sidecar.gateway import create_app

    return json.dumps(create_app().openapi, indent=2, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/openapi.json is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
