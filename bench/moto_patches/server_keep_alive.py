"""Connection reuse and request rate of moto server over one HTTP client.

For each given moto (a Python interpreter with it installed), runs a moto
server on 127.0.0.1 and sends REQUESTS small S3 requests through one
http.client connection that reconnects whenever the server closes it. Prints
how many TCP connections were opened and the rate, as a ratio to the first
(baseline) interpreter. Also counts the interim responses to one
Expect: 100-continue request.

    python bench/moto_patches/server_keep_alive.py \\
        /path/to/upstream/bin/python /path/to/patched/bin/python
"""

from __future__ import annotations

import argparse
import socket
import time
from http.client import HTTPConnection
from urllib.parse import urlsplit

from _server import moto_server


class CountingConnection(HTTPConnection):
    opened = 0

    def connect(self) -> None:
        CountingConnection.opened += 1
        super().connect()


def interim_responses(host: str, port: int) -> int:
    request = (
        b"PUT /bench/expect HTTP/1.1\r\nHost: localhost\r\n"
        b"Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        b"hello"
    )
    received = b""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received.count(b" 100 Continue\r\n")


def measure(url: str, requests: int) -> tuple[int, float, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    CountingConnection.opened = 0
    conn = CountingConnection(host, port, timeout=10)
    conn.request("PUT", "/bench")
    conn.getresponse().read()

    start = time.monotonic()
    for i in range(requests):
        conn.request("HEAD", "/bench")
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
    rate = requests / (time.monotonic() - start)
    conn.close()
    return CountingConnection.opened, rate, interim_responses(host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("pythons", nargs="+", help="baseline first")
    args = parser.parse_args()

    print(f"{args.requests} HeadBucket requests over one client connection")
    base_rate = None
    for python in args.pythons:
        with moto_server(python) as (url, _):
            opened, rate, interim = measure(url, args.requests)
        base_rate = base_rate or rate
        print(
            f"{python}: {opened} TCP connections for {args.requests + 1} requests, "
            f"{rate:.0f} requests/s ({rate / base_rate:.2f}x baseline), "
            f"{interim} '100 Continue' for one Expect: 100-continue"
        )


if __name__ == "__main__":
    main()
