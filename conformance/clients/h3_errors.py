"""The HTTP/3 client's error, importable without aioquic (the runner catches it)."""


class H3Error(Exception):
    """The connection failed or the peer broke the protocol (the message says how)."""
