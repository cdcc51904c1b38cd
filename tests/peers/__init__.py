"""The peers' own test suites (Starlette, sse-starlette) as a regression gate: each
runs twice, without and with StreamMiddleware around every app it builds, and every
test that passes without the line must pass with it (``scripts/peer-suites.sh``)."""
