"""HTTP on the wire: malformed requests on raw sockets, framing (HEAD,
keep-alive, chunked, 100-continue, aws-chunked), headers (multi-value,
hop-by-hop), CORS, and a backend that goes away and comes back."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cheroot.wsgi
import pytest
import requests
from botocore.exceptions import ClientError

from proxy.backend import InProcessBackend, RemoteBackend
from proxy.gateway import Gateway
from proxy.listener import ListenerChain, register
from proxy.listeners.cors import CorsListener
from proxy.server import ProxyServer
from tests.proxy.proxy_support import MotoServer, ProxyFactory, RunningProxy, unique


def exchange(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send raw bytes, return everything the proxy sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def read_response(sock: socket.socket, head_only: bool = False) -> tuple[bytes, bytes]:
    """One response (head, body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 100"):
        return head, body
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while not head_only and len(body) < length:
        body += sock.recv(65536)
    return head, body


def assert_serves(proxy: RunningProxy) -> None:
    health = requests.get(proxy.url + "/_proxy/health", timeout=30)
    assert health.status_code == 200


def test_a_bad_request_line_gets_an_xml_400(proxy: RunningProxy) -> None:
    answer = exchange(proxy.port, b"THIS IS NOT HTTP\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Type: application/xml" in answer
    assert b"<Error><Code>BadRequest</Code>" in answer
    assert_serves(proxy)


def test_oversized_headers_get_an_xml_error(proxy: RunningProxy) -> None:
    huge = b"X-Big: " + b"a" * (200 * 1024) + b"\r\n"
    answer = exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n")

    assert answer.split(b" ")[1] in (b"413", b"431")
    assert b"<Error><Code>" in answer
    assert_serves(proxy)


def test_a_body_shorter_than_its_content_length_gets_a_400(proxy: RunningProxy) -> None:
    request = b"PUT /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort"

    answer = exchange(proxy.port, request, half_close=True)

    assert answer.startswith(b"HTTP/1.1 400")
    assert b"<Code>MalformedRequest</Code>" in answer
    assert b"ended after 5 of the 100 bytes" in answer
    assert_serves(proxy)


def test_keep_alive_and_head_on_one_connection(proxy: RunningProxy) -> None:
    s3 = proxy.client("s3")
    bucket = unique("head")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000, ACL="public-read")

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        sock.sendall(f"HEAD /{bucket}/k HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, extra = read_response(sock, head_only=True)
        sock.sendall(f"GET /{bucket}/k HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        second_head, body = read_response(sock)

    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1000" in head
    assert extra == b""
    assert second_head.startswith(b"HTTP/1.1 200")
    assert body == b"x" * 1000


def test_a_chunked_upload_arrives_whole(proxy: RunningProxy) -> None:
    s3 = proxy.client("s3")
    bucket = unique("chunked")
    s3.create_bucket(Bucket=bucket)

    def chunks() -> Iterator[bytes]:
        yield b"first-"
        yield b"second"

    put = requests.put(f"{proxy.url}/{bucket}/k", data=chunks(), timeout=30)

    assert put.status_code == 200
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first-second"


def test_expect_100_continue_gets_one_interim_response(proxy: RunningProxy) -> None:
    s3 = proxy.client("s3")
    bucket = unique("expect")
    s3.create_bucket(Bucket=bucket)
    head = (
        f"PUT /{bucket}/k HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        "Expect: 100-continue\r\n\r\n"
    )

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        sock.sendall(head.encode())
        interim, rest = read_response(sock)
        sock.sendall(b"body")
        final, _ = read_response(sock)

    assert interim == b"HTTP/1.1 100 Continue"
    assert rest == b""
    assert final.startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"body"


def test_aws_chunked_content_encoding_passes_through(proxy: RunningProxy) -> None:
    s3 = proxy.client("s3")
    bucket = unique("awschunked")
    s3.create_bucket(Bucket=bucket)
    payload = b"hello aws-chunked"
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n" % (
        len(payload),
        payload,
    )
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Content-Sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "X-Amz-Decoded-Content-Length": str(len(payload)),
        "X-Amz-Trailer": "x-amz-checksum-crc32",
    }

    put = requests.put(
        f"{proxy.url}/{bucket}/k", data=body, headers=headers, timeout=30
    )

    assert put.status_code == 200
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == payload


def echo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A backend that shows the headers it received and sends multi-value and
    hop-by-hop headers back."""
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(seen).encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Connection", "X-Back-Hop"),
            ("X-Back-Hop", "dropped"),
            ("X-Back-End", "kept"),
        ],
    )
    return [body]


def html_error_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A backend that fails the way moto's Flask apps do: with an HTML page."""
    body = b"<!doctype html><title>500 Internal Server Error</title><p>boom</p>"
    start_response(
        "500 INTERNAL SERVER ERROR",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "66")],
    )
    return [body]


AppProxy = Callable[[Any], RunningProxy]


@pytest.fixture(params=["in-process", "remote"])
def app_proxy(request: pytest.FixtureRequest) -> Iterator[AppProxy]:
    """The proxy in front of a WSGI app: called in process, or served by plain
    cheroot and reached over the remote backend."""
    started: list[Any] = []

    def make(app: Any) -> RunningProxy:
        if request.param == "remote":
            server = cheroot.wsgi.Server(("127.0.0.1", 0), app, numthreads=4)
            server.prepare()
            threading.Thread(target=server.serve, daemon=True).start()
            started.append(server)
            backend: Any = RemoteBackend(f"http://127.0.0.1:{server.bind_addr[1]}")
        else:
            backend = InProcessBackend(app)
        proxy = ProxyServer(Gateway(backend, ListenerChain()), port=0)
        proxy.start()
        started.append(proxy)
        return RunningProxy(proxy, str(request.param))

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def echo_proxy(app_proxy: AppProxy) -> RunningProxy:
    return app_proxy(echo_app)


class ClosingChunks:
    """A WSGI response iterable that records its close()."""

    def __init__(self, size: int) -> None:
        block = 64 << 10
        self.chunks = [b"x" * min(block, size - at) for at in range(0, size, block)]
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("size", [10, 3 << 20], ids=["small", "streamed"])
def test_a_backend_body_arrives_whole_and_the_app_iterable_is_closed(
    app_proxy: AppProxy, size: int
) -> None:
    body = ClosingChunks(size)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # No Content-Length: the proxy must frame what it sends on.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return body

    proxy = app_proxy(app)
    answer = requests.get(proxy.url + "/bucket/key", timeout=30)

    assert answer.status_code == 200
    assert answer.content == b"x" * size
    assert body.closed.wait(5), "the application's iterable was never closed"


def test_a_backend_html_error_page_becomes_an_aws_error(app_proxy: AppProxy) -> None:
    proxy = app_proxy(html_error_app)

    xml = requests.get(proxy.url + "/bucket/key", timeout=30)
    as_json = requests.post(
        proxy.url + "/",
        headers={"X-Amz-Target": "DynamoDB_20120810.ListTables"},
        data=b"{}",
        timeout=30,
    )

    assert xml.status_code == 500
    assert xml.headers["Content-Type"] == "application/xml"
    assert b"<Code>InternalFailure</Code>" in xml.content
    assert b"html" not in xml.content
    assert as_json.status_code == 500
    assert as_json.json()["__type"] == "InternalFailure"


def test_headers_end_to_end_pass_and_hop_by_hop_stop(echo_proxy: RunningProxy) -> None:
    request = (
        "GET /echo HTTP/1.1\r\nHost: x\r\n"
        "Connection: keep-alive, X-Front-Hop\r\nX-Front-Hop: secret\r\n"
        "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: p\r\n"
        "X-Multi: a\r\nX-Multi: b\r\n\r\n"
    )

    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=15) as sock:
        sock.sendall(request.encode())
        head, body = read_response(sock)
    seen = json.loads(body)
    lines = head.decode().split("\r\n")

    assert seen["HTTP_X_MULTI"].replace(" ", "") == "a,b"
    for hop in ("X_FRONT_HOP", "KEEP_ALIVE", "TE", "PROXY_AUTHORIZATION"):
        assert "HTTP_" + hop not in seen
    assert "Set-Cookie: a=1" in lines
    assert "Set-Cookie: b=2" in lines
    assert "X-Back-End: kept" in lines
    assert not [line for line in lines if line.startswith("X-Back-Hop")]


def test_cors_preflight_and_response_headers(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(register("cors", CorsListener()))
    origin = {"Origin": "http://app.example"}

    preflight = requests.options(
        proxy.url + "/bucket/key",
        headers={
            **origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type,x-amz-date",
        },
        timeout=30,
    )
    actual = requests.get(proxy.url + "/", headers=origin, timeout=30)

    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "PUT" in preflight.headers["Access-Control-Allow-Methods"]
    assert (
        preflight.headers["Access-Control-Allow-Headers"] == "content-type,x-amz-date"
    )
    assert actual.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "ETag" in actual.headers["Access-Control-Expose-Headers"]


def test_unknown_services_get_errors_in_their_protocol(proxy: RunningProxy) -> None:
    scope = "Credential=AKID/20250101/us-east-1/nosuchservice/aws4_request"
    xml = requests.post(
        proxy.url + "/",
        headers={"Authorization": f"AWS4-HMAC-SHA256 {scope}, Signature=x"},
        timeout=30,
    )
    as_json = requests.post(
        proxy.url + "/",
        headers={"X-Amz-Target": "NoSuchService_20200101.DoThing"},
        data=b"{}",
        timeout=30,
    )

    assert xml.status_code == 400
    assert b"<Code>UnknownService</Code>" in xml.content
    assert b"'nosuchservice'" in xml.content
    assert as_json.status_code == 400
    assert as_json.json()["__type"] == "UnknownService"


def test_backend_down_then_back_up(make_proxy: ProxyFactory) -> None:
    moto = MotoServer()
    moto.start()
    proxy = make_proxy(backend=RemoteBackend(moto.url))
    s3, dynamodb = proxy.client("s3"), proxy.client("dynamodb")
    s3.list_buckets()

    moto.stop()
    with pytest.raises(ClientError) as s3_error:
        s3.list_buckets()
    with pytest.raises(ClientError) as dynamodb_error:
        dynamodb.list_tables()
    health = requests.get(proxy.url + "/_proxy/health", timeout=30).json()
    moto.start()
    buckets = s3.list_buckets()
    moto.stop()

    assert s3_error.value.response["Error"]["Code"] == "BadGateway"
    assert s3_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert "unreachable" in s3_error.value.response["Error"]["Message"]
    assert dynamodb_error.value.response["Error"]["Code"] == "BadGateway"
    assert health["backend"]["reachable"] is False
    assert buckets["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_backend_that_never_answers_is_a_504(make_proxy: ProxyFactory) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(
        target=lambda: accepted.append(silent.accept()[0]), daemon=True
    )
    acceptor.start()
    proxy = make_proxy(
        backend=RemoteBackend(f"http://127.0.0.1:{port}", read_timeout=0.5)
    )

    answer = requests.get(proxy.url + "/bucket/key", timeout=30)

    assert answer.status_code == 504
    assert b"<Code>GatewayTimeout</Code>" in answer.content
    for sock in accepted:
        sock.close()
    silent.close()


def test_a_kept_alive_connection_the_backend_closed_is_retried_once(
    make_proxy: ProxyFactory,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    served: list[int] = []

    def serve() -> None:
        # Answers as if it kept the connection alive, then closes it anyway.
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                served.append(1)

    threading.Thread(target=serve, daemon=True).start()
    proxy = make_proxy(backend=RemoteBackend(f"http://127.0.0.1:{port}"))

    first = requests.get(proxy.url + "/bucket/one", timeout=30)
    second = requests.get(proxy.url + "/bucket/two", timeout=30)
    listener.close()

    assert (first.status_code, first.text) == (200, "ok")
    assert (second.status_code, second.text) == (200, "ok")
    assert len(served) == 2
