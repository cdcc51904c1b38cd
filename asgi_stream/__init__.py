"""asgi-stream: correct, fast LLM token streaming for any ASGI app.

app.add_middleware(StreamMiddleware)

@app.post("/generate")
async def generate(...):
    return TokenStream(tokens())
"""

from ._types import Token, TokenSource
from .cancel import CancelReason, CancelToken, StreamCancelled
from .channel import TokenChannel
from .config import UNSET, ErrorPayload, Hook, ResumeOwner, StreamConfig, StreamOptions, Unset
from .context import current_cancel_token, current_stream
from .errors import BufferOverflowError, FramingError, SendTimeoutError, StreamError, UnsupportedTokenError
from .events import Event, comment
from .flush import Coalesce, FlushPolicy, PerToken
from .middleware import StreamMiddleware
from .negotiate import Format, negotiate
from .record import Outcome, StreamRecord
from .response import TokenStream

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "BufferOverflowError",
    "CancelReason",
    "CancelToken",
    "Coalesce",
    "ErrorPayload",
    "Event",
    "FlushPolicy",
    "Format",
    "FramingError",
    "Hook",
    "Outcome",
    "PerToken",
    "ResumeOwner",
    "SendTimeoutError",
    "StreamCancelled",
    "StreamConfig",
    "StreamError",
    "StreamMiddleware",
    "StreamOptions",
    "StreamRecord",
    "Token",
    "TokenChannel",
    "TokenSource",
    "TokenStream",
    "Unset",
    "UnsupportedTokenError",
    "comment",
    "current_cancel_token",
    "current_stream",
    "negotiate",
]
