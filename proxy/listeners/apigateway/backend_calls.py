"""AWS calls made through the proxy's backend, in either backend mode.

botocore builds and signs the requests; instead of opening a connection it
hands each one to `Backend.send`, so the same code reads moto in this process
and a moto server at a URL.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.session  # type: ignore[import-untyped]  # no types shipped
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import (  # type: ignore[import-untyped]
    AWSRequest,
    AWSResponse,
)
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from werkzeug.datastructures import Headers

from proxy.backend import Backend
from proxy.messages import Request, Response

# moto accepts any credentials; these are the ones its documentation uses.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
# The host the signed requests name: moto routes them by their credential scope.
BACKEND_HOST = "localhost"


class _Raw:
    """The raw body botocore reads a response from."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, amount: int | None = None) -> bytes:
        return self._stream.read(amount)

    def stream(self, amount: int = 64 * 1024, **_: Any) -> Iterator[bytes]:
        while chunk := self._stream.read(amount):
            yield chunk


class BackendCalls:
    """boto-style clients and signed raw requests that go to one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._session = botocore.session.get_session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str) -> Any:
        """A botocore client of `service` whose calls go to the backend."""
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                client = self._session.create_client(
                    service,
                    region_name=region,
                    endpoint_url=f"http://{BACKEND_HOST}",
                    aws_access_key_id=ACCESS_KEY,
                    aws_secret_access_key=SECRET_KEY,
                    config=Config(
                        retries={"max_attempts": 1}, s3={"addressing_style": "path"}
                    ),
                )
                client.meta.events.register("before-send", self._send_prepared)
                self._clients[(service, region)] = client
        return client

    def send_signed(
        self,
        service: str,
        region: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        """Sign a request for `service` with SigV4 and send it to the backend;
        `target` is the path with its query string."""
        request = AWSRequest(
            method=method,
            url=f"http://{BACKEND_HOST}{target}",
            data=body,
            headers={**headers, "Host": BACKEND_HOST},
        )
        credentials = Credentials(ACCESS_KEY, SECRET_KEY)
        SigV4Auth(credentials, service, region).add_auth(request)
        sent = Headers()
        for name, value in request.headers.items():
            sent.add(name, value.decode() if isinstance(value, bytes) else value)
        sent["Content-Length"] = str(len(body))
        response = self.backend.send(Request(method, target, body, sent))
        return Response(response.status_code, response.headers, response.content)

    def _send_prepared(self, request: Any, **_: Any) -> Any:
        parts = urlsplit(request.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        headers = Headers()
        for name, value in request.headers.items():
            headers.add(name, value.decode() if isinstance(value, bytes) else value)
        headers["Host"] = parts.netloc
        headers["Content-Length"] = str(len(body))
        answer = self.backend.send(Request(request.method, target, body, headers))
        return AWSResponse(
            request.url,
            answer.status_code,
            dict(answer.headers.items()),
            _Raw(answer.content),
        )
