#!/usr/bin/env bash
# Runs every check: lint and format (ruff), types (mypy --strict on the package), then
# every test (unit, fault matrix, end-to-end on real servers, the peers' suites with the
# middleware injected, conformance, demo, benchmark smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --system
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict asgi_stream
exec .venv/bin/python -m pytest -q "$@"
