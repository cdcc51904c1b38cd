#!/usr/bin/env bash
# Starlette's and sse-starlette's own test suites (sdists of the installed versions),
# each run without and with StreamMiddleware around every app it builds; fails on any
# test that passes without the line and not with it, unless tests/peers/allowlist.py
# names it. Usage: scripts/peer-suites.sh [starlette|sse-starlette ...] [--workers N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m tests.peers.runner "$@"
