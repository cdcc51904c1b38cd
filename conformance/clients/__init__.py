"""Measuring clients: HTTP/1.1 on h11, HTTP/2 on h2, both over plain sockets."""

from ._chunk import Chunk, body_of, gaps
from .h1 import H1Client, H1Error, H1Response
from .h2 import H2Client, H2Error, H2Stream

__all__ = ["Chunk", "H1Client", "H1Error", "H1Response", "H2Client", "H2Error", "H2Stream", "body_of", "gaps"]
