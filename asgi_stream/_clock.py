"""The one clock the stream core reads: monotonic seconds.

Deadlines (keepalive, send timeout, coalescing, shutdown drain) and the stream
record's times all come from :func:`monotonic`. Tests replace it (with a virtual
clock, e.g. trio's ``MockClock``) to run deadline logic without real sleeps; code
on a hot path binds it once per stream.
"""

from __future__ import annotations

import time

monotonic = time.monotonic
