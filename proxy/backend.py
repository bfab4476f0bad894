"""Backends: where the proxy forwards a request that no listener answered.

`InProcessBackend` calls moto's WSGI application in the proxy's own process (no
second hop); `RemoteBackend` forwards to a moto server at a URL over a pooled
keep-alive session, streaming bodies both ways.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from werkzeug.datastructures import Headers

from proxy.errors import BackendTimeout, BackendUnavailable, BackendUnreachable
from proxy.hop import end_to_end
from proxy.messages import CHUNK_SIZE, Request, Response, StreamedBody, body_bytes

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

        chunks = self._app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = captured
        response_headers = Headers(end_to_end(headers))
        if "Content-Length" not in response_headers and request.method != "HEAD":
            response_headers["Content-Length"] = str(len(body))
        return Response(int(status[:3]), response_headers, body)

    def describe(self) -> dict[str, object]:
        return {"kind": "in-process"}

    def services(self) -> frozenset[str] | None:
        return moto_services()

    def close(self) -> None:
        """Nothing to release: moto lives as long as the process."""


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


def _environ(request: Request) -> dict[str, Any]:
    raw_path, _, query = request.path.partition("?")
    body = body_bytes(request.data)
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
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
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
    return environ


class RemoteBackend:
    """A moto server at `url`, over one pooled keep-alive session."""

    def __init__(
        self,
        url: str,
        pool_size: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BackendUnavailable(
                f"backend URL {url!r} is not http(s)://host:port; "
                "give e.g. --backend-url http://127.0.0.1:5000"
            )
        self.url = url.rstrip("/")
        self._netloc = parts.netloc
        self._timeout = (connect_timeout, read_timeout)
        # The adapter alone, without a Session: no default headers, cookie jar,
        # proxy settings from the environment or URL re-quoting. Requests go
        # out as the client sent them, and cost less CPU on the way.
        self._adapter = _StreamingAdapter(
            pool_connections=1, pool_maxsize=pool_size, max_retries=0, pool_block=False
        )

    def send(self, request: Request) -> Response:
        try:
            upstream = self._adapter.send(
                self._prepare(request), stream=True, timeout=self._timeout
            )
        except requests.Timeout as exc:
            raise BackendTimeout(
                f"the backend at {self.url} did not answer in {self._timeout[1]:g} s"
            ) from exc
        except requests.ConnectionError as exc:
            raise BackendUnreachable(
                f"the backend at {self.url} is unreachable: {_reason(exc)}"
            ) from exc

        response_headers = Headers(end_to_end(upstream.raw.headers.items()))
        if request.method == "HEAD" or upstream.status_code in (204, 304):
            upstream.close()
            return Response(upstream.status_code, response_headers, b"")
        return Response(upstream.status_code, response_headers, _stream(upstream))

    def describe(self) -> dict[str, object]:
        return {"kind": "remote", "url": self.url, "reachable": self._reachable()}

    def services(self) -> frozenset[str] | None:
        return moto_services()

    def close(self) -> None:
        self._adapter.close()

    def _prepare(self, request: Request) -> requests.PreparedRequest:
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in end_to_end(request.headers.items()):
            if name.lower() == "content-length":
                continue
            # One value per name; RFC 9110 (5.3) allows joining with commas.
            existing = headers.get(name)
            headers[name] = f"{existing}, {value}" if existing else value

        data = request.data
        body: bytes | StreamedBody | Iterator[bytes] | None = data
        if isinstance(data, StreamedBody) and data.length is None:
            body = iter(data)  # without Content-Length, urllib3 sends it chunked
        elif isinstance(data, StreamedBody):
            headers["Content-Length"] = str(data.length)
        elif data or request.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(data))
        else:
            body = None

        prepared = requests.PreparedRequest()
        prepared.method = request.method
        prepared.url = self.url + request.path
        prepared.headers = headers
        prepared.body = body  # type: ignore[assignment]
        return prepared

    def _reachable(self) -> bool:
        host, _, port = self._netloc.rpartition(":")
        try:
            with socket.create_connection((host or self._netloc, int(port or 80)), 1):
                return True
        except (OSError, ValueError):
            return False


class _StreamingAdapter(HTTPAdapter):
    """An adapter whose connections send request bodies in `CHUNK_SIZE` blocks;
    the default 16 KiB blocks cost a large upload several times the CPU."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.setdefault("blocksize", CHUNK_SIZE)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def _stream(upstream: requests.Response) -> Iterator[bytes]:
    try:
        yield from upstream.raw.stream(CHUNK_SIZE, decode_content=False)
    except Exception as exc:
        log.warning("the backend's response broke off: %s", exc)
        raise
    finally:
        upstream.close()


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    return text.split(": ", 1)[-1][:200]
