"""asgi-stream: correct, fast LLM token streaming for any ASGI app.

app.add_middleware(StreamMiddleware)

@app.post("/generate")
async def generate(...):
    return TokenStream(tokens())
"""

from .cancel import CancelReason, CancelToken, StreamCancelled
from .channel import TokenChannel
from .config import StreamConfig
from .context import current_cancel_token, current_stream
from .errors import BufferOverflowError, FramingError, SendTimeoutError, StreamError, UnsupportedTokenError
from .events import Event, comment
from .flush import Coalesce, PerToken
from .middleware import StreamMiddleware
from .negotiate import negotiate
from .record import Outcome, StreamRecord
from .response import TokenStream

__version__ = "0.1.0"

__all__ = [
    "BufferOverflowError",
    "CancelReason",
    "CancelToken",
    "Coalesce",
    "Event",
    "FramingError",
    "Outcome",
    "PerToken",
    "SendTimeoutError",
    "StreamCancelled",
    "StreamConfig",
    "StreamError",
    "StreamMiddleware",
    "StreamRecord",
    "TokenChannel",
    "TokenStream",
    "UnsupportedTokenError",
    "comment",
    "current_cancel_token",
    "current_stream",
    "negotiate",
]
