"""Helpers and fixtures of the proxy tests: a moto server subprocess, and the
proxy on a free loopback port in front of either backend. Every test that takes
`proxy` runs once per backend.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import pytest

from proxy.backend import Backend, InProcessBackend, RemoteBackend
from proxy.gateway import Gateway
from proxy.listener import ListenerChain, Registration
from proxy.server import ProxyServer

CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class MotoServer:
    """`python -m moto.server` as a subprocess on a loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@dataclass
class RunningProxy:
    """A started proxy and the means to talk to it."""

    server: ProxyServer
    kind: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, service: str, **config: Any) -> Any:
        cfg = botocore.config.Config(retries={"max_attempts": 1}, **config)
        return boto3.client(service, endpoint_url=self.url, config=cfg, **CREDENTIALS)


ProxyFactory = Callable[..., RunningProxy]


@pytest.fixture(params=["in-process", "remote"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_proxy(
    backend_kind: str, request: pytest.FixtureRequest
) -> Iterator[ProxyFactory]:
    """Start proxies for this test's backend kind, with the listeners given."""
    started: list[ProxyServer] = []

    def make(
        *registrations: Registration, backend: Backend | None = None
    ) -> RunningProxy:
        if backend is None:
            if backend_kind == "remote":
                moto: MotoServer = request.getfixturevalue("moto_server")
                backend = RemoteBackend(moto.url, read_timeout=30)
            else:
                backend = InProcessBackend()
        server = ProxyServer(
            Gateway(backend, ListenerChain(registrations)), port=0, threads=16
        )
        server.start()
        started.append(server)
        return RunningProxy(server, backend_kind)

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> RunningProxy:
    """A proxy with no listeners, for this test's backend kind."""
    return make_proxy()


def unique(prefix: str) -> str:
    """A resource name no other test uses (moto state is shared)."""
    return f"{prefix}-{time.time_ns() % 10**12}"
