"""The gateway: the WSGI application that reads a request, detects its service,
runs the listener chain around the backend, and sends the result.

It knows nothing about sockets; `proxy.server` hosts it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import quote, urlsplit

from werkzeug.datastructures import Headers

from proxy.backend import Backend
from proxy.errors import MalformedRequest, ProxyError, UnknownService
from proxy.health import moto_release
from proxy.listener import ListenerChain
from proxy.messages import Request, Response, StreamedBody, close_body
from proxy.render import error_response, render_error
from proxy.services import (
    JSON,
    REST_XML,
    ServiceMatch,
    credential_service,
    detect_service,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("proxy.access")

HEALTH_PATH = "/_proxy/health"

# Bodies up to this size are read into memory, so that listeners see bytes;
# larger ones, and chunked ones that turn out larger, stream.
BUFFER_LIMIT = 8 * 1024 * 1024

StartResponse = Callable[..., Any]


class Gateway:
    """The proxy's WSGI application."""

    def __init__(
        self,
        backend: Backend,
        chain: ListenerChain | None = None,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> None:
        self.backend = backend
        self.chain = chain or ListenerChain()
        self.buffer_limit = buffer_limit
        self.known = backend.services()

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        match: ServiceMatch | None = None
        try:
            request = read_request(environ, self.buffer_limit)
            if request.path.partition("?")[0] == HEALTH_PATH:
                response = self.health()
            else:
                match = self.detect(request)
                response = self.handle(request, match)
        except ProxyError as exc:
            response = render_error(exc, _protocol(match, environ))
        except Exception:
            log.exception("unexpected error while handling a request")
            protocol = _protocol(match, environ)
            response = error_response(
                protocol, 500, "InternalFailure", "the proxy failed; see its log"
            )

        status = response.status_code
        head = environ.get("REQUEST_METHOD") == "HEAD"
        framed = "Content-Length" in response.headers
        if isinstance(response.body, bytes) and not framed and not head:
            # A listener's response may leave it out; clients need the framing.
            response.headers["Content-Length"] = str(len(response.body))
        start_response(_status_line(status), list(response.headers.items()))
        access_log.info(
            "%s %s %s %d %.1fms",
            match.service if match else "-",
            match.operation if match else "-",
            environ.get("REQUEST_METHOD", "-"),
            status,
            (time.perf_counter() - started) * 1000,
        )
        if head:
            close_body(response.body)
            return []
        body = response.body
        return [body] if isinstance(body, bytes) else body

    def detect(self, request: Request) -> ServiceMatch:
        """The service of `request`, or UnknownService."""
        form = request.data if isinstance(request.data, bytes) else None
        match = detect_service(
            request.method, request.path, request.headers, form, self.known
        )
        if match is None:
            query = request.path.partition("?")[2]
            named = request.headers.get("X-Amz-Target") or credential_service(
                request.headers.get("Authorization"), query
            )
            raise UnknownService(
                f"the backend does not serve the service of this request "
                f"({named!r}); GET {HEALTH_PATH} lists the services"
            )
        return match

    def handle(self, request: Request, match: ServiceMatch) -> Response:
        """Run the chain around the backend for one request."""
        chain = self.chain.for_service(match.service)
        request, answer, ran = self.chain.forward(chain, request)
        if answer is None:
            try:
                answer = self.backend.send(request)
            except ProxyError as exc:
                log.warning("%s %s: %s", match.service, match.operation, exc)
                answer = render_error(exc, match.protocol)
            else:
                answer = aws_shaped(answer, match)
        if not ran:
            return answer
        return self.chain.respond(chain, ran, request, answer)

    def health(self) -> Response:
        """The health document: backend, services, listeners, moto release."""
        document = {
            "status": "ok",
            "backend": self.backend.describe(),
            "services": sorted(self.known or ()),
            "listeners": [
                {"name": r.name, "service": r.service, "order": r.order}
                for r in self.chain.registrations
            ],
            **moto_release(),
        }
        body = json.dumps(document, indent=2).encode() + b"\n"
        headers = Headers(
            {"Content-Type": "application/json", "Content-Length": str(len(body))}
        )
        return Response(200, headers, body)


# AWS error codes for the statuses a backend's HTML error pages carry.
_HTML_ERROR_CODES = {
    400: "BadRequest",
    403: "AccessDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    500: "InternalFailure",
    501: "NotImplemented",
    503: "ServiceUnavailable",
}


def aws_shaped(response: Response, match: ServiceMatch) -> Response:
    """The response, or an AWS error in its place when the backend answered an
    error with an HTML page (moto does, for its own failures)."""
    content_type = response.headers.get("Content-Type", "")
    if response.status_code < 400 or not content_type.startswith("text/html"):
        return response
    close_body(response.body)
    status = response.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    log.warning(
        "%s %s: the backend answered %d with an HTML page; sent an AWS error",
        match.service,
        match.operation,
        status,
    )
    code = _HTML_ERROR_CODES.get(status, phrase.replace(" ", ""))
    message = f"the backend answered {status} {phrase}; see the backend's log"
    return error_response(match.protocol, status, code, message)


def read_request(environ: dict[str, Any], buffer_limit: int) -> Request:
    """The `Request` in a WSGI environ; a small body is read, a large one
    streams."""
    method = environ["REQUEST_METHOD"]
    path = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
    if not path:
        path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
    elif not path.startswith("/"):
        # An absolute-form target, as sent to a forward proxy.
        parts = urlsplit(path)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.add(key[5:].replace("_", "-").title(), value)
    if environ.get("CONTENT_TYPE"):
        headers.add("Content-Type", environ["CONTENT_TYPE"])
    if environ.get("CONTENT_LENGTH"):
        headers.add("Content-Length", environ["CONTENT_LENGTH"])
    return Request(method, path, _read_body(environ, headers, buffer_limit), headers)


def _read_body(
    environ: dict[str, Any], headers: Headers, buffer_limit: int
) -> bytes | StreamedBody:
    stream: IO[bytes] = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    chunked = environ.get("wsgi.input_terminated") or "chunked" in headers.get(
        "Transfer-Encoding", ""
    )
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise MalformedRequest(
                f"Content-Length {declared!r} is not a number"
            ) from None
        if length > buffer_limit:
            return StreamedBody(b"", stream, length)
        data = _read_exactly(stream, length)
        if len(data) < length:
            raise MalformedRequest(
                f"the body ended after {len(data)} of the {length} bytes that "
                "Content-Length declares"
            )
        return data
    if not chunked:
        return b""
    prefix = _read_exactly(stream, buffer_limit + 1)
    if len(prefix) <= buffer_limit:
        return prefix
    return StreamedBody(prefix, stream, None)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts = []
    try:
        while size > 0:
            chunk = stream.read(min(size, 1024 * 1024))
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
    except (OSError, ValueError) as exc:
        raise MalformedRequest(f"the request body could not be read: {exc}") from exc
    return b"".join(parts)


def _protocol(match: ServiceMatch | None, environ: dict[str, Any]) -> str:
    if match is not None:
        return match.protocol
    return JSON if environ.get("HTTP_X_AMZ_TARGET") else REST_XML


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"
