"""Measuring clients: cheap raw-socket readers, each run as its own process
(``python -m benchmarks.clients.<name> JSON_ARGS``) pinned to the client CPU.
They print one JSON object on stdout. No HTTP library sits in the measuring path:
HTTP/1.1 is written and read by hand, HTTP/2 frames are parsed by hand (only the
request's header block is HPACK-encoded with ``hpack``)."""
