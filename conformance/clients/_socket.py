"""What the measuring clients share: closing a socket gently or with a TCP RST."""

from __future__ import annotations

import socket
import struct
from typing import Self


class SocketClient:
    """Base of the h1 and h2 clients: owns ``sock`` and the ways to close it."""

    sock: socket.socket
    closed: bool

    def abort(self) -> None:
        """Close with a TCP RST (``SO_LINGER`` 0): the abrupt way a browser tab dies."""
        if self.closed:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        """Close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_bytes(value: bytes | str) -> bytes:
    """Header names and values as bytes (str is taken as latin-1)."""
    return value if isinstance(value, bytes) else value.encode("latin-1")
