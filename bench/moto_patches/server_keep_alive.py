"""Connection reuse and request cost of moto server over one HTTP client.

For each given moto (a Python interpreter with it installed), runs a moto
server on 127.0.0.1 and sends small S3 requests through one http.client
connection that reconnects whenever the server closes it, alternating rounds
that ask for keep-alive with rounds that send `Connection: close` (the
baseline, on the same server). Prints how many TCP connections each kind
opened, the rate and the server CPU per request, and the keep-alive/close
ratios. Also counts the interim responses to one Expect: 100-continue.

    python bench/moto_patches/server_keep_alive.py \\
        /path/to/upstream/bin/python /path/to/patched/bin/python
"""

from __future__ import annotations

import argparse
import socket
import time
from http.client import HTTPConnection
from urllib.parse import urlsplit

from _server import moto_server, process_cpu_seconds

ROUNDS = 10


class CountingConnection(HTTPConnection):
    opened = 0

    def connect(self) -> None:
        CountingConnection.opened += 1
        super().connect()


def interim_responses(host: str, port: int | str) -> int:
    request = (
        b"PUT /bench/expect HTTP/1.1\r\nHost: localhost\r\n"
        b"Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        b"hello"
    )
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received.count(b" 100 Continue\r\n")


def measure(url: str, pid: int, requests: int) -> dict[str, tuple[int, float, float]]:
    """Per kind of round: connections opened, requests/s, server CPU ms/request."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conn = CountingConnection(host, port, timeout=10)
    conn.request("PUT", "/bench")
    conn.getresponse().read()

    totals = {"keep-alive": [0, 0.0, 0.0], "close": [0, 0.0, 0.0]}
    # Short alternating rounds, so that a change in machine load hits both kinds.
    for _ in range(ROUNDS):
        for kind, headers in (("close", {"Connection": "close"}), ("keep-alive", {})):
            CountingConnection.opened = 0
            cpu, start = process_cpu_seconds(pid), time.monotonic()
            for _ in range(requests // (2 * ROUNDS)):
                conn.request("HEAD", "/bench", headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
            totals[kind][0] += CountingConnection.opened
            totals[kind][1] += time.monotonic() - start
            totals[kind][2] += process_cpu_seconds(pid) - cpu
    conn.close()
    sent = requests // (2 * ROUNDS) * ROUNDS
    return {
        kind: (opened, sent / elapsed, cpu * 1000 / sent)
        for kind, (opened, elapsed, cpu) in totals.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("pythons", nargs="+")
    args = parser.parse_args()

    print(
        f"{args.requests} HeadBucket requests over one client connection, half "
        "asking for keep-alive, half sending Connection: close (baseline)"
    )
    for python in args.pythons:
        with moto_server(python) as (url, process):
            result = measure(url, process.pid, args.requests)
            interim = interim_responses(*urlsplit(url)[1].split(":"))
        keep, close = result["keep-alive"], result["close"]
        print(
            f"{python}: keep-alive {keep[0]} TCP connections for "
            f"{args.requests // 2} requests, {keep[1]:.0f}/s, "
            f"{keep[2]:.2f} ms server CPU each; close {close[0]} connections, "
            f"{close[1]:.0f}/s, {close[2]:.2f} ms CPU; "
            f"ratio rate {keep[1] / close[1]:.2f}x, CPU {keep[2] / close[2]:.2f}x; "
            f"{interim} '100 Continue' for one Expect: 100-continue"
        )


if __name__ == "__main__":
    main()
