"""Benchmark the proxy against moto server: throughput, p50 and p99 latency, and
the ratios to the direct moto server; then the proxy's peak RSS while a large
object is uploaded through the remote backend.

Every target runs in its own process with fresh state: a direct moto server,
the proxy with moto in process, and the proxy in front of a second moto server,
all on this environment's moto (the pinned moto-ext). A fourth target, a moto
server of plain upstream moto (installed once under the cache), is the
baseline of the localstack-core ratios printed beside ours; ``--no-plain``
leaves it out.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config

log = logging.getLogger("bench.proxy")

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "bench",
    "aws_secret_access_key": "bench",
}
OPERATIONS = ("sqs.SendMessage", "s3.PutObject", "s3.GetObject", "dynamodb.PutItem")
TARGETS = ("direct moto", "proxy in-process", "proxy remote")
# A moto server of plain upstream moto: the baseline of localstack's ratios.
PLAIN = "plain moto"
# The ratios localstack-core reached on this machine's kind (shared/FACTS.md).
LOCALSTACK = {"sqs.SendMessage": 1.79, "s3.PutObject": 1.35, "s3.GetObject": 1.23}
TARGET_RATIO = {"proxy in-process": 1.0, "proxy remote": 0.85}
RSS_LIMIT_MIB = 100


@dataclass
class Result:
    """One operation against one target."""

    target: str
    operation: str
    seconds: float
    latencies: list[float]
    errors: int
    cpu_seconds: float = 0.0

    def merge(self, other: Result) -> None:
        """Add another round of the same operation against the same target."""
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors
        self.cpu_seconds += other.cpu_seconds

    @property
    def cpu_ms(self) -> float:
        """Server-side CPU (all the target's processes) per request."""
        return self.cpu_seconds / len(self.latencies) * 1000

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


class Process:
    """A server subprocess on a loopback port; stopped on exit."""

    def __init__(
        self, argv: list[str], port: int, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            time.sleep(0.1)
        raise RuntimeError(f"{argv} did not listen on {port} within 60 s")

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User and system CPU of the process so far."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text()
        values = fields.rsplit(")", 1)[1].split()
        return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


# Plain upstream moto, for the baselines that name it.

# What the proxy needs beside moto[server] in plain moto's environment.
PROXY_EXTRA = ["cheroot>=10"]


def fork_base() -> str:
    """The upstream version the fork's series applies to."""
    declaration = tomllib.loads((ROOT / "forks" / "moto.toml").read_text())
    return str(declaration["base"]["version"])


def plain_moto_python(version: str) -> str:
    """An interpreter with plain upstream moto *version*, installed once from
    the package index into a virtualenv under the cache (``FORKKIT_CACHE``)."""
    cache = Path(os.environ.get("FORKKIT_CACHE", Path.home() / ".cache" / "forkkit"))
    venv = cache / "bench" / f"moto-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    if stamp.is_file():
        return str(python)
    log.info("installing plain moto %s into %s (once)", version, venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "--quiet"),
            *("--index-url", "https://pypi.org/simple/"),
            *(f"moto[server]=={version}", *PROXY_EXTRA),
        ],
        check=True,
        env=env,
    )
    stamp.touch()
    return str(python)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def moto_server(python: str = sys.executable) -> Process:
    port = free_port()
    argv = [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return Process(argv, port)


def proxy_server(backend_url: str | None = None) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "proxy", "--port", str(port), "--log-level"]
    argv += ["warning"]
    if backend_url:
        argv += ["--backend-url", backend_url]
    return Process(argv, port)


@dataclass
class Target:
    """One system under test: its endpoint and the processes that serve it."""

    name: str
    processes: list[Process]

    @property
    def url(self) -> str:
        return self.processes[-1].url

    def cpu_seconds(self) -> float:
        """User and system CPU of all its processes so far."""
        return sum(process.cpu_seconds() for process in self.processes)


def start_target(name: str, plain_python: str | None = None) -> Target:
    """Start the processes behind one target, each with fresh state."""
    if name == "direct moto":
        return Target(name, [moto_server()])
    if name == PLAIN:
        assert plain_python is not None
        return Target(name, [moto_server(plain_python)])
    if name == "proxy in-process":
        return Target(name, [proxy_server()])
    moto = moto_server()
    return Target(name, [moto, proxy_server(moto.url)])


def client(url: str, service: str, threads: int) -> Any:
    config = botocore.config.Config(
        retries={"max_attempts": 1}, max_pool_connections=threads * 2
    )
    return boto3.client(service, endpoint_url=url, config=config, **CREDENTIALS)


def run_load(
    name: str,
    operation: str,
    count: int,
    threads: int,
    call: Callable[[int, int], object],
    first: int = 0,
) -> Result:
    """`count` calls spread over `threads` threads: call(thread, index), with
    indexes from `first` on."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def work(thread: int) -> None:
        mine = []
        for index in range(first, first + count // threads):
            began = time.perf_counter()
            try:
                call(thread, index)
            except Exception as exc:
                with lock:
                    errors[0] += 1
                log.debug("%s %s failed: %s", name, operation, exc)
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    return Result(name, operation, seconds, latencies, errors[0])


def operations(url: str, threads: int) -> dict[str, Callable[[int, int], object]]:
    """The benchmarked calls against one endpoint, with what they need set up.

    Each call takes (thread, index); indexes are unique across rounds, and
    GetObject reads the keys PutObject wrote in the same round.
    """
    sqs, s3 = client(url, "sqs", threads), client(url, "s3", threads)
    dynamodb = client(url, "dynamodb", threads)
    # One queue per client thread: moto's SendMessage slows down with queue
    # depth (shared/FACTS.md), which would measure moto, not the proxy.
    queues = [
        sqs.create_queue(QueueName=f"bench-{t}")["QueueUrl"] for t in range(threads)
    ]
    s3.create_bucket(Bucket="bench")
    dynamodb.create_table(
        TableName="bench",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    body = b"x" * 1024
    return {
        "sqs.SendMessage": lambda t, i: sqs.send_message(
            QueueUrl=queues[t], MessageBody=f"message {i}"
        ),
        "s3.PutObject": lambda t, i: s3.put_object(
            Bucket="bench", Key=f"k-{t}-{i}", Body=body
        ),
        "s3.GetObject": lambda t, i: s3.get_object(Bucket="bench", Key=f"k-{t}-{i}")[
            "Body"
        ].read(),
        "dynamodb.PutItem": lambda t, i: dynamodb.put_item(
            TableName="bench", Item={"id": {"S": f"{t}-{i}"}, "v": {"N": str(i)}}
        ),
    }


def run_all(
    count: int, threads: int, rounds: int, plain_python: str | None
) -> list[Result]:
    """The load against every target, interleaved: each round runs every
    operation against every target in turn, so that a change in the machine's
    background load falls on all targets alike."""
    names = [*TARGETS, PLAIN] if plain_python else list(TARGETS)
    targets = [start_target(name, plain_python) for name in names]
    try:
        calls = {t.name: operations(t.url, threads) for t in targets}
        totals: dict[tuple[str, str], Result] = {}
        per_round = count // rounds
        for round_ in range(rounds):
            for operation in OPERATIONS:
                # Rotate who goes first, so no target always runs first.
                turn = round_ % len(targets)
                order = targets[turn:] + targets[:turn]
                for target in order:
                    log.info(
                        "round %d/%d: %s: %s x %d",
                        round_ + 1,
                        rounds,
                        target.name,
                        operation,
                        per_round,
                    )
                    call = calls[target.name][operation]
                    first = round_ * per_round // threads
                    cpu = target.cpu_seconds()
                    result = run_load(
                        target.name, operation, per_round, threads, call, first
                    )
                    result.cpu_seconds = target.cpu_seconds() - cpu
                    key = (target.name, operation)
                    if key in totals:
                        totals[key].merge(result)
                    else:
                        totals[key] = result
        return list(totals.values())
    finally:
        for target in targets:
            for process in reversed(target.processes):
                process.stop()


def report(results: list[Result]) -> bool:
    """Print the table; True when every target ratio is met."""
    direct = {r.operation: r for r in results if r.target == "direct moto"}
    in_process = {r.operation: r for r in results if r.target == "proxy in-process"}
    met = True
    print(
        f"{'operation':<18} {'target':<17} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'cpu ms':>7} {'errors':>6} {'ratio':>6}  goal"
    )
    for operation in OPERATIONS:
        for result in (r for r in results if r.operation == operation):
            ratio = result.rate / direct[operation].rate
            goal = TARGET_RATIO.get(result.target)
            verdict = ""
            if goal is not None:
                ok = ratio >= goal
                met = met and ok
                verdict = f">= {goal:.2f} {'met' if ok else 'MISSED'}"
            print(
                f"{operation:<18} {result.target:<17} {result.rate:>8.1f} "
                f"{result.percentile(0.5):>8.1f} {result.percentile(0.99):>8.1f} "
                f"{result.cpu_ms:>7.2f} {result.errors:>6} {ratio:>5.2f}x  {verdict}"
            )
        plain = next(
            (r for r in results if r.operation == operation and r.target == PLAIN),
            None,
        )
        if operation in LOCALSTACK:
            reference = LOCALSTACK[operation]
            verdict = "of plain moto (FACTS.md)"
            if plain is not None:
                ours = in_process[operation].rate / plain.rate
                ok = ours >= reference
                met = met and ok
                verdict += (
                    f"; proxy in-process {ours:.2f}x of plain moto: "
                    f"{'met' if ok else 'MISSED'}"
                )
            print(
                f"{operation:<18} {'localstack-core':<17} {'':>8} {'':>8} {'':>8} "
                f"{'':>7} {'':>6} {reference:>5.2f}x  {verdict}"
            )
    return met


class GeneratedFile:
    """A seekable file of `size` generated bytes, so the client holds none."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.block = bytes(range(256)) * 4096

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        left = self.size - self.position
        amount = left if amount < 0 else min(amount, left)
        offset = self.position % len(self.block)
        data = (self.block[offset:] + self.block)[: min(amount, len(self.block))]
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.size}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position


def upload(size_mib: int) -> bool:
    """Upload `size_mib` MiB through the remote-backend proxy; True when the
    proxy's peak RSS stays under the limit."""
    moto = moto_server()
    proxy = proxy_server(moto.url)
    try:
        s3 = client(proxy.url, "s3", 1)
        s3.create_bucket(Bucket="upload")
        log.info("uploading %d MiB through the remote-backend proxy", size_mib)
        began = time.perf_counter()
        s3.put_object(Bucket="upload", Key="big", Body=GeneratedFile(size_mib << 20))
        seconds = time.perf_counter() - began
        stored = s3.head_object(Bucket="upload", Key="big")["ContentLength"]
        upload_peak = proxy.peak_rss_mib()

        log.info("downloading it again through the proxy")
        began = time.perf_counter()
        body = s3.get_object(Bucket="upload", Key="big")["Body"]
        received = sum(len(chunk) for chunk in body.iter_chunks(1 << 20))
        download_seconds = time.perf_counter() - began
        proxy_peak, moto_peak = proxy.peak_rss_mib(), moto.peak_rss_mib()
    finally:
        proxy.stop()
        moto.stop()
    ok = stored == size_mib << 20 and upload_peak < RSS_LIMIT_MIB
    print(
        f"upload {size_mib} MiB through the remote-backend proxy: {seconds:.1f} s, "
        f"{size_mib / seconds:.0f} MiB/s; stored {stored} bytes; peak RSS proxy "
        f"{upload_peak:.0f} MiB (goal < {RSS_LIMIT_MIB}: {'met' if ok else 'MISSED'})"
    )
    print(
        f"download {size_mib} MiB through the remote-backend proxy: "
        f"{download_seconds:.1f} s, received {received} bytes; peak RSS proxy "
        f"{proxy_peak:.0f} MiB, moto server {moto_peak:.0f} MiB"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/proxy", description=__doc__)
    parser.add_argument(
        "--part",
        choices=("all", "load", "upload"),
        default="all",
        help="the load comparison, the large upload, or both (default)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="per operation")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (default 5)"
    )
    parser.add_argument(
        "--upload-mib", type=int, default=1024, help="size of the upload (1 GiB)"
    )
    parser.add_argument(
        "--no-plain",
        action="store_true",
        help="leave out the plain upstream moto server (the localstack baseline)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="bench: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.pop("PROXY_BACKEND_URL", None)

    met = True
    if args.part in ("all", "load"):
        if args.requests % (args.rounds * args.threads):
            parser.error("--requests must divide into --rounds x --threads")
        plain = None if args.no_plain else plain_moto_python(fork_base())
        met = report(run_all(args.requests, args.threads, args.rounds, plain)) and met
    if args.part in ("all", "upload"):
        met = upload(args.upload_mib) and met
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
