#!/usr/bin/env bash
# Runs every test (unit, end-to-end on real servers, conformance, demo, benchmark smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --system
exec .venv/bin/python -m pytest -q "$@"
