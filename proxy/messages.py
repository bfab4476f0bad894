"""The request and response objects that listeners and backends exchange.

A body is `bytes` when it is small enough to hold in memory, and a
`StreamedBody` otherwise, so that a large upload passes through the proxy in
chunks instead of sitting in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from werkzeug.datastructures import Headers

CHUNK_SIZE = 64 * 1024


class StreamedBody:
    """A request body read lazily from the client: a prefix already read, then
    the rest of the input stream.

    It is a file (`read`) and an iterable of chunks, and knows its length when
    the client declared one (`len()` is then the exact byte count).
    """

    def __init__(self, prefix: bytes, rest: IO[bytes], length: int | None) -> None:
        self._prefix = prefix
        self._rest = rest
        self._remaining = None if length is None else length - len(prefix)
        self.length = length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("a chunked body has no length until it is read")
        return self.length

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all that is left when negative)."""
        if self._prefix:
            taken = self._prefix if size < 0 else self._prefix[:size]
            self._prefix = self._prefix[len(taken) :]
            return taken
        if self._remaining is not None:
            if self._remaining <= 0:
                return b""
            size = self._remaining if size < 0 else min(size, self._remaining)
        data = self._rest.read(size)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK_SIZE):
            yield chunk

    def read_all(self) -> bytes:
        """The whole body in memory, for backends and listeners that need it."""
        return b"".join(self)


Body = bytes | StreamedBody


def body_bytes(data: Body) -> bytes:
    """The body as bytes, reading a streamed body to its end."""
    return data if isinstance(data, bytes) else data.read_all()


@dataclass
class Request:
    """A request to forward: `path` is the raw target, query string included."""

    method: str
    path: str
    data: Body = b""
    headers: Headers = field(default_factory=Headers)


@dataclass
class Response:
    """A response to send: `body` is bytes or an iterable of byte chunks."""

    status_code: int = 200
    headers: Headers = field(default_factory=Headers)
    body: bytes | Iterable[bytes] = b""

    @property
    def content(self) -> bytes:
        """The body as bytes; a streamed body is read once and kept."""
        if not isinstance(self.body, bytes):
            chunks = self.body
            self.body = b"".join(chunks)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return self.body


def close_body(body: object) -> None:
    """Let go of a response body that will not be sent: a streamed backend
    body then hands its connection back to the pool, or closes it."""
    close = getattr(body, "close", None)
    if close is not None:
        close()
