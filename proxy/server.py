"""Serving: the gateway on cheroot's threaded HTTP/1.1 server.

cheroot was chosen by measurement (see the README): with keep-alive
connections and a worker pool it serves moto faster than moto's own werkzeug
server, which the in-process proxy must match or beat.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi

from proxy.gateway import Gateway
from proxy.listener import ListenerContext
from proxy.render import error_response
from proxy.services import REST_XML

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024


class _FoldingHeaderReader(cheroot_server.HeaderReader):
    """Reads request headers keeping every value of a repeated field.

    cheroot keeps only the last value of most repeated fields; RFC 9110 (5.3)
    lets a recipient join them with commas instead, which loses nothing.
    Obsolete line folding is refused, as RFC 9112 (5.2) allows.
    """

    def __call__(
        self, rfile: Any, hdict: dict[bytes, bytes] | None = None
    ) -> dict[bytes, bytes]:
        headers = {} if hdict is None else hdict
        while True:
            line = rfile.readline()
            if not line:
                raise ValueError("Illegal end of headers.")
            if line == b"\r\n":
                return headers
            if not line.endswith(b"\r\n"):
                raise ValueError("HTTP requires CRLF terminators")
            if line[:1] in (b" ", b"\t"):
                raise ValueError("Obsolete line folding is not accepted.")
            name, colon, value = line.partition(b":")
            if not colon:
                raise ValueError("Illegal header line.")
            key = name.strip().title()
            value = value.strip()
            if key in headers:
                value = headers[key] + b", " + value
            headers[key] = value


class _AwsErrorRequest(cheroot_server.HTTPRequest):
    """cheroot's request handler, with its own errors (bad request line,
    oversized headers, ...) rendered as AWS XML errors instead of plain text."""

    header_reader = _FoldingHeaderReader()

    def simple_response(self, status: Any, msg: Any = "") -> None:
        text = str(status)
        code = int(text[:3])
        message = msg.decode("latin-1") if isinstance(msg, bytes) else str(msg)
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = ""
        response = error_response(
            REST_XML, code, reason.replace(" ", "") or "BadRequest", message or reason
        )
        lines = [f"{self.server.protocol} {code} {reason}"]
        for name, value in response.headers.items():
            lines.append(f"{name}: {value}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.close_connection = True
        try:
            self.conn.wfile.write(head + response.content)
        except OSError as exc:
            log.debug("could not send a %s to the client: %s", code, exc)


class _AwsErrorConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _AwsErrorRequest


class ProxyServer:
    """The gateway served on `host:port` (port 0 picks a free one)."""

    def __init__(
        self,
        gateway: Gateway,
        host: str = "127.0.0.1",
        port: int = 4566,
        threads: int = 32,
        timeout: int = 10,
    ) -> None:
        self.gateway = gateway
        self._server = wsgi.Server(
            (host, port),
            gateway,
            numthreads=threads,
            request_queue_size=128,
            timeout=timeout,
            shutdown_timeout=5,
            server_name="moto-ext-proxy",
        )
        self._server.ConnectionClass = _AwsErrorConnection
        self._server.max_request_header_size = MAX_HEADER_BYTES
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a background thread."""
        self._server.prepare()
        context = ListenerContext(self.url, self.gateway.backend)
        try:
            self.gateway.chain.start(context)
        except Exception:
            self._server.stop()  # release the port: nothing will serve it
            raise
        self._thread = threading.Thread(
            target=self._server.serve, name="proxy-server", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port the server listens on, once started."""
        return int(self._server.bind_addr[1])

    @property
    def url(self) -> str:
        """The URL clients use as their endpoint."""
        return f"http://{self._server.bind_addr[0]}:{self.port}"

    def stop(self) -> None:
        """Stop accepting, finish the requests in progress, release the backend."""
        if self._thread is None:
            return
        self._server.stop()
        self._thread.join(10)
        self._thread = None
        self.gateway.chain.stop()
        self.gateway.backend.close()
