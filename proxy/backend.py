"""Backends: where the proxy forwards a request that no listener answered.

`InProcessBackend` calls moto's WSGI application in the proxy's own process (no
second hop); `RemoteBackend` forwards to a moto server at a URL over a pool of
keep-alive connections, streaming bodies both ways.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes, urlsplit

from werkzeug.datastructures import Headers

from proxy.errors import BackendTimeout, BackendUnavailable, BackendUnreachable
from proxy.hop import end_to_end
from proxy.messages import (
    CHUNK_SIZE,
    Body,
    Request,
    Response,
    StreamedBody,
)

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Backend(Protocol):
    """What the gateway forwards requests to."""

    def send(self, request: Request) -> Response:
        """Forward one request and return the backend's response."""
        ...

    def describe(self) -> dict[str, object]:
        """What the health endpoint shows about this backend."""
        ...

    def services(self) -> frozenset[str] | None:
        """The services the backend serves, or None when it cannot tell."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


def moto_services() -> frozenset[str] | None:
    """The service module names of the importable moto, None without moto."""
    try:
        from moto.backend_index import backend_url_patterns
    except ImportError:
        return None
    return frozenset(name for name, _ in backend_url_patterns if name.isidentifier())


class InProcessBackend:
    """moto's WSGI application, called in this process."""

    def __init__(self, app: WSGIApp | None = None) -> None:
        if app is None:
            app = _moto_app()
        self._app = app

    def send(self, request: Request) -> Response:
        environ = _environ(request)
        captured: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            captured[:] = [status, headers]
            return _no_write

        body = AppBody.of(self._app(environ, start_response))
        status, headers = captured
        response_headers = Headers(end_to_end(headers))
        framed = "Content-Length" in response_headers or request.method == "HEAD"
        if isinstance(body, bytes) and not framed:
            response_headers["Content-Length"] = str(len(body))
        return Response(int(status[:3]), response_headers, body)

    def describe(self) -> dict[str, object]:
        return {"kind": "in-process"}

    def services(self) -> frozenset[str] | None:
        return moto_services()

    def close(self) -> None:
        """Nothing to release: moto lives as long as the process."""


class AppBody:
    """The rest of a WSGI application's response body, sent as moto makes it.

    Bodies up to `STREAM_THRESHOLD` are read whole (`of` returns bytes), so a
    small response costs nothing extra; a larger one, such as an S3 object,
    streams, and the application's iterable is closed when it ends or when
    the body is closed unsent.
    """

    def __init__(self, source: Iterable[bytes]) -> None:
        self._source: Iterable[bytes] | None = source
        self._rest = iter(source)
        self._prefix: list[bytes] = []

    @classmethod
    def of(cls, source: Iterable[bytes]) -> bytes | AppBody:
        """The body as bytes when it is small, else a streaming `AppBody`."""
        body = cls(source)
        size = 0
        try:
            for chunk in body._rest:
                body._prefix.append(chunk)
                size += len(chunk)
                if size > STREAM_THRESHOLD:
                    return body
        except BaseException:
            body.close()
            raise
        body.close()
        return b"".join(body._prefix)

    def __iter__(self) -> Iterator[bytes]:
        try:
            prefix, self._prefix = self._prefix, []
            yield from prefix
            yield from self._rest
        finally:
            self.close()

    def close(self) -> None:
        """Close the application's iterable, as WSGI asks of its caller."""
        source, self._source = self._source, None
        close = getattr(source, "close", None)
        if close is not None:
            close()


# Response bodies of the in-process backend larger than this stream.
STREAM_THRESHOLD = 1024 * 1024


def _no_write(data: bytes) -> object:
    raise NotImplementedError("moto does not use the WSGI write() callable")


def _moto_app() -> WSGIApp:
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )
    except ImportError as exc:
        raise BackendUnavailable(
            f"moto is not importable ({exc}); run tools/bootstrap, or use "
            "--backend-url to forward to a moto server"
        ) from exc

    class Dispatcher(DomainDispatcherApplication):
        """moto's dispatcher, remembering which backend serves a host name.

        moto works that out anew for every request, listing its own package
        directory each time, under a lock that every request takes: a fifth of
        its CPU for a small DynamoDB call. The answer depends on the host name
        alone, so it is kept.
        """

        def __init__(self) -> None:
            super().__init__(create_backend_app)
            self.known_hosts: dict[str | None, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            if host in self.known_hosts:
                return self.known_hosts[host]
            backend = super().get_backend_for_host(host)
            if len(self.known_hosts) < KNOWN_HOSTS_LIMIT:
                self.known_hosts[host] = backend
            return backend

    app: WSGIApp = Dispatcher()
    return app


# Virtual-host S3 names one host per bucket; past this many, stop remembering.
KNOWN_HOSTS_LIMIT = 4096


class _WsgiInput(io.RawIOBase):
    """A streamed request body as the file object WSGI applications read."""

    def __init__(self, body: StreamedBody) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _environ(request: Request) -> dict[str, Any]:
    raw_path, _, query = request.path.partition("?")
    host = request.headers.get("Host", "localhost")
    server_name, _, port = host.rpartition(":") if ":" in host else (host, "", "80")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query,
        "REQUEST_URI": request.path,
        "RAW_URI": request.path,
        "SERVER_NAME": server_name,
        "SERVER_PORT": port or "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in end_to_end(request.headers.items()):
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if key == "CONTENT_TYPE":
                environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value

    # A large body goes to moto as the stream it arrives on, so that moto
    # (moto-ext spools S3 objects to disk) decides what to hold in memory.
    data = request.data
    if isinstance(data, bytes):
        environ["CONTENT_LENGTH"] = str(len(data))
        environ["wsgi.input"] = io.BytesIO(data)
        return environ
    environ["wsgi.input"] = io.BufferedReader(_WsgiInput(data), CHUNK_SIZE)
    if data.length is None:
        # Chunked: the stream itself ends where the body does.
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(data.length)
    return environ


class RemoteBackend:
    """A moto server at `url`, over a pool of keep-alive connections.

    The transport is the standard library's `http.client`: measured against a
    moto server it costs 0.7-0.8 ms of CPU per small request, where requests'
    adapter costs 1.5-1.7 ms, and the proxy's CPU decides how close the remote
    backend comes to a direct moto server.
    """

    def __init__(
        self,
        url: str,
        pool_size: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendUnavailable(
                f"backend URL {url!r} is not http(s)://host:port; "
                "give e.g. --backend-url http://127.0.0.1:5000"
            )
        self.url = url.rstrip("/")
        self._netloc = parts.netloc
        self._read_timeout = read_timeout
        self._pool = ConnectionPool(
            parts.scheme,
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            pool_size,
            connect_timeout,
            read_timeout,
        )

    def send(self, request: Request) -> Response:
        headers, body, chunked = self._outgoing(request)
        retryable = body is None or isinstance(body, bytes)
        while True:
            connection: http.client.HTTPConnection | None = None
            reused = False
            try:
                connection, reused = self._pool.acquire()
                _send_request(connection, request, headers, body, chunked)
                upstream = connection.getresponse()
            except TimeoutError as exc:
                _close_quietly(connection)
                raise BackendTimeout(
                    f"the backend at {self.url} did not answer in "
                    f"{self._read_timeout:g} s"
                ) from exc
            except (http.client.HTTPException, OSError) as exc:
                _close_quietly(connection)
                if reused and retryable and isinstance(exc, _STALE):
                    # The backend closed a kept-alive connection before this
                    # request reached it; a fresh connection is safe.
                    self._pool.discard_idle()
                    continue
                raise BackendUnreachable(
                    f"the backend at {self.url} is unreachable: {_reason(exc)}"
                ) from exc
            break

        response_headers = Headers(end_to_end(upstream.getheaders()))
        stream = UpstreamBody(self._pool, connection, upstream)
        if request.method == "HEAD" or upstream.status in (204, 304):
            stream.close()
            return Response(upstream.status, response_headers, b"")
        return Response(upstream.status, response_headers, stream)

    def describe(self) -> dict[str, object]:
        return {"kind": "remote", "url": self.url, "reachable": self._reachable()}

    def services(self) -> frozenset[str] | None:
        return moto_services()

    def close(self) -> None:
        self._pool.discard_idle()

    def _outgoing(
        self, request: Request
    ) -> tuple[list[tuple[str, str]], Body | Iterator[bytes] | None, bool]:
        joined: dict[str, tuple[str, str]] = {}
        for name, value in end_to_end(request.headers.items()):
            key = name.lower()
            if key == "content-length":
                continue
            # One line per name; RFC 9110 (5.3) allows joining with commas.
            if key in joined:
                value = f"{joined[key][1]}, {value}"
            joined[key] = (name, value)
        if "host" not in joined:
            joined["host"] = ("Host", self._netloc)
        headers = list(joined.values())

        data = request.data
        if isinstance(data, StreamedBody) and data.length is None:
            return headers, iter(data), True
        if isinstance(data, StreamedBody):
            return [*headers, ("Content-Length", str(data.length))], data, False
        if data or request.method in ("POST", "PUT", "PATCH"):
            return [*headers, ("Content-Length", str(len(data)))], data, False
        return headers, None, False

    def _reachable(self) -> bool:
        try:
            with socket.create_connection(self._pool.address, 1):
                return True
        except OSError:
            return False


# What a kept-alive connection that the backend has closed fails with.
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


def _send_request(
    connection: http.client.HTTPConnection,
    request: Request,
    headers: list[tuple[str, str]],
    body: Body | Iterator[bytes] | None,
    chunked: bool,
) -> None:
    # Host and Accept-Encoding go out as the client sent them, not as
    # http.client would add them.
    connection.putrequest(
        request.method, request.path, skip_host=True, skip_accept_encoding=True
    )
    for name, value in headers:
        connection.putheader(name, value)
    if chunked:
        connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders(body, encode_chunked=chunked)


class ConnectionPool:
    """Idle keep-alive connections to one backend, reused newest first."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.address = (host, port)
        self._https = scheme == "https"
        self._size = size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (True) or a new, connected one (False)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        factory = (
            http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        )
        connection = factory(
            *self.address, timeout=self._connect_timeout, blocksize=CHUNK_SIZE
        )
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self._read_timeout)
        # http.client sends the head and the body in two writes; without this,
        # Nagle's algorithm holds a small body back until the head is acked.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, False

    def release(self, connection: http.client.HTTPConnection) -> None:
        """Keep a connection whose response was read to its end."""
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(connection)
                return
        connection.close()

    def discard_idle(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class UpstreamBody:
    """A backend's response body, streamed in chunks; the connection goes back
    to the pool when the body was read to its end, and is closed otherwise."""

    def __init__(
        self,
        pool: ConnectionPool,
        connection: http.client.HTTPConnection,
        upstream: http.client.HTTPResponse,
    ) -> None:
        self._pool = pool
        self._connection: http.client.HTTPConnection | None = connection
        self._upstream = upstream
        self._complete = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._upstream.read(CHUNK_SIZE):
                yield chunk
            self._complete = True
        except (http.client.HTTPException, OSError) as exc:
            log.warning("the backend's response broke off: %s", exc)
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Return the connection to the pool, or close it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        finished = self._complete or self._upstream.isclosed()
        if finished and not self._upstream.will_close:
            self._pool.release(connection)
        else:
            connection.close()


def _close_quietly(connection: http.client.HTTPConnection | None) -> None:
    if connection is not None:
        connection.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc)[:200] or type(exc).__name__
