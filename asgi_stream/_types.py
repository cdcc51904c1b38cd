"""ASGI callable types, named once for the whole package (Starlette style)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What a token generator may yield: text, UTF-8 bytes, a JSON value (dict, list, number,
#: bool, None, a pydantic model), or an Event. Anything else ends the stream with an
#: UnsupportedTokenError naming its type.
Token = object
#: The content an endpoint hands to TokenStream: any sync or async iterable of tokens.
TokenSource = AsyncIterable[Token] | Iterable[Token]
