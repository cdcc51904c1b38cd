"""The four workloads. Each takes running servers (or starts its own) and returns
per-run records; :mod:`benchmarks.report` turns them into tables."""
