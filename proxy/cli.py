"""`python -m proxy`: parse flags and environment, build the gateway, serve
until SIGINT or SIGTERM.

Prints the endpoint URL on stdout once it listens; everything else goes to
stderr through logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from proxy.backend import Backend, InProcessBackend, RemoteBackend
from proxy.errors import ProxyError
from proxy.gateway import Gateway
from proxy.listener import ListenerChain, load_entry_points, load_factory
from proxy.server import ProxyServer

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Everything the proxy is started with."""

    host: str = "127.0.0.1"
    port: int = 4566
    backend_url: str | None = None
    log_level: str = "info"
    threads: int = 32
    listeners: tuple[str, ...] = field(default_factory=tuple)
    entry_points: bool = True


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Settings from flags, with the environment as defaults."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        description="An AWS endpoint: a listener chain in front of moto.",
    )
    parser.add_argument(
        "--host",
        default=env.get("PROXY_HOST", "127.0.0.1"),
        help="address to listen on (env PROXY_HOST; default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_int_env("PROXY_PORT", 4566),
        help="port to listen on, 0 for a free one (env PROXY_PORT; default 4566)",
    )
    parser.add_argument(
        "--backend-url",
        default=env.get("PROXY_BACKEND_URL") or None,
        help="forward to the moto server at this URL instead of moto in this "
        "process (env PROXY_BACKEND_URL)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=env.get("PROXY_LOG_LEVEL", "info").lower(),
        help="log level (env PROXY_LOG_LEVEL; default info: one line per request)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=_int_env("PROXY_THREADS", 32),
        help="worker threads (env PROXY_THREADS; default 32)",
    )
    parser.add_argument(
        "--listener",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="add a listener made by this zero-argument factory (repeatable)",
    )
    parser.add_argument(
        "--no-entry-points",
        action="store_true",
        help="do not load the listeners that installed packages register",
    )
    args = parser.parse_args(argv)
    if args.log_level not in LOG_LEVELS:
        parser.error(f"PROXY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port number (0-65535)")
    if args.threads < 1:
        parser.error(f"--threads {args.threads} must be at least 1")
    return Settings(
        host=args.host,
        port=args.port,
        backend_url=args.backend_url,
        log_level=args.log_level,
        threads=args.threads,
        listeners=tuple(args.listener),
        entry_points=not args.no_entry_points,
    )


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        sys.exit(f"python -m proxy: error: {name}={value!r} is not a number")


def build_gateway(settings: Settings) -> Gateway:
    """The gateway for `settings`: its backend and its listener chain."""
    backend: Backend
    if settings.backend_url:
        backend = RemoteBackend(settings.backend_url, pool_size=settings.threads)
    else:
        backend = InProcessBackend()
    chain = ListenerChain(load_entry_points() if settings.entry_points else ())
    for reference in settings.listeners:
        chain.add(load_factory(reference))
    return Gateway(backend, chain)


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly."""
    gateway = build_gateway(settings)
    server = ProxyServer(gateway, settings.host, settings.port, settings.threads)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    backend = settings.backend_url or "moto in this process"
    log.info("listening on %s, backend: %s", server.url, backend)
    print(server.url, flush=True)
    while not stopping.wait(1):
        pass
    server.stop()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy; the exit code is 0 after a clean shutdown, 1 on error."""
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        serve(settings)
    except ProxyError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    return 0
