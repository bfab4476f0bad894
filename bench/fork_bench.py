"""The fork's patches as users meet them: through the proxy, on plain upstream
moto and on the pinned moto-ext release, in one run.

For each of the two, the proxy is started from that environment (moto in
process unless said otherwise) and gets the same three loads:

- SQS SendMessage to empty queues and to one holding ``--depth`` messages, in
  alternating rounds; the rate at depth as a ratio to the rate on an empty
  queue (goal >= 0.9).
- One ``--size-mib`` S3 object uploaded and downloaded through the proxy with
  moto in process, and again through the proxy in front of a moto server;
  the peak of the summed RSS of every proxy and backend process (goal under
  300 MiB).
- ``--threads`` x ``--puts`` concurrent PutObject calls to one key, in both
  backend modes (goal: no error).

Plain upstream moto is installed once into a virtualenv under the cache
(``FORKKIT_CACHE``, default ``~/.cache/forkkit``) from the package index,
with the proxy's own server beside it; ``--upstream-python`` names another
interpreter instead. The goals are checked on the fork; upstream's numbers
are the baseline they are read against. Exit status 0 when every goal is met.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from proxy_bench import (
    ROOT,
    GeneratedFile,
    Process,
    client,
    fork_base,
    free_port,
    plain_moto_python,
)

log = logging.getLogger("bench.fork")

DEPTH_GOAL = 0.9
RSS_GOAL_MIB = 300
# SendMessage calls timed per round on each queue, and the rounds.
SAMPLE = 100
ROUNDS = 5


@dataclass
class Numbers:
    """What one moto did under the three loads."""

    name: str
    sqs: dict[str, float] = field(default_factory=dict)
    rss: dict[str, dict[str, float]] = field(default_factory=dict)
    # Per backend mode: the rate and the error codes of the concurrent puts.
    puts: dict[str, tuple[float, collections.Counter[str]]] = field(
        default_factory=dict
    )


# Servers: the proxy and moto run from the environment under test, with the
# proxy's code taken from this checkout.


def _start(argv: list[str], port: int) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    env["PYTHONPATH"] = str(ROOT)
    return Process(argv, port, env)


def start_proxy(python: str, backend_url: str | None = None) -> Process:
    port = free_port()
    argv = [python, "-m", "proxy", "--port", str(port), "--no-entry-points"]
    argv += ["--log-level", "warning"]
    if backend_url:
        argv += ["--backend-url", backend_url]
    return _start(argv, port)


def start_moto(python: str) -> Process:
    port = free_port()
    argv = [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return _start(argv, port)


@contextmanager
def served(python: str, remote: bool = False) -> Iterator[list[Process]]:
    """The proxy (and the moto server behind it when *remote*), stopped after."""
    processes: list[Process] = []
    try:
        if remote:
            processes.append(start_moto(python))
        processes.append(start_proxy(python, processes[0].url if remote else None))
        yield processes
    finally:
        for process in reversed(processes):
            process.stop()


class PeakRss:
    """Samples the summed RSS of some processes every 20 ms, keeping the peak."""

    def __init__(self, processes: list[Process]) -> None:
        self.pids = [process.popen.pid for process in processes]
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_rss_mib(pid) for pid in self.pids))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# The loads.


def sqs_depth(proxy: Process, depth: int) -> dict[str, float]:
    """SendMessage rates on empty queues and on one deep queue, in alternating
    rounds so that other load on the machine falls on both alike, with the CPU
    per send of the proxy's process (moto runs in it)."""
    sqs: Any = client(proxy.url, "sqs", 1)
    deep_queue = sqs.create_queue(QueueName="bench-deep")["QueueUrl"]
    log.info("  filling a queue to %d messages", depth)
    entries = [{"Id": str(i), "MessageBody": "x" * 100} for i in range(10)]
    for _ in range(depth // 10):
        sqs.send_message_batch(QueueUrl=deep_queue, Entries=entries)

    seconds = {"empty": 0.0, "deep": 0.0}
    cpu = {"empty": 0.0, "deep": 0.0}
    for round_ in range(ROUNDS):
        empty_queue = sqs.create_queue(QueueName=f"bench-empty-{round_}")["QueueUrl"]
        for kind, queue in (("empty", empty_queue), ("deep", deep_queue)):
            began, used = time.perf_counter(), proxy.cpu_seconds()
            for _ in range(SAMPLE):
                sqs.send_message(QueueUrl=queue, MessageBody="x" * 100)
            seconds[kind] += time.perf_counter() - began
            cpu[kind] += proxy.cpu_seconds() - used
    sends = ROUNDS * SAMPLE
    result = {f"{kind}_cpu_ms": cpu[kind] * 1000 / sends for kind in cpu}
    result |= {kind: sends / seconds[kind] for kind in seconds}
    result["ratio"] = result["deep"] / result["empty"]
    return result


def large_object(processes: list[Process], size_mib: int) -> dict[str, float]:
    s3: Any = client(processes[-1].url, "s3", 1)
    s3.create_bucket(Bucket="bench-large")
    size = size_mib << 20
    with PeakRss(processes) as peak:
        began = time.perf_counter()
        s3.put_object(Bucket="bench-large", Key="big", Body=GeneratedFile(size))
        put_seconds = time.perf_counter() - began
        put_peak = peak.peak

        began = time.perf_counter()
        body = s3.get_object(Bucket="bench-large", Key="big")["Body"]
        received = sum(len(chunk) for chunk in body.iter_chunks(1 << 20))
        get_seconds = time.perf_counter() - began
    if received != size:
        raise RuntimeError(f"downloaded {received} bytes of {size}")
    return {
        "put_s": put_seconds,
        "get_s": get_seconds,
        "put_peak": put_peak,
        "peak": peak.peak,
    }


def concurrent_puts(
    url: str, threads: int, puts: int
) -> tuple[float, collections.Counter[str]]:
    s3: Any = client(url, "s3", threads)
    s3.create_bucket(Bucket="bench-one-key")
    errors: collections.Counter[str] = collections.Counter()

    def put(i: int) -> None:
        try:
            s3.put_object(Bucket="bench-one-key", Key="k", Body=f"body {i}".encode())
        except ClientError as exc:
            errors[str(exc.response["Error"].get("Code"))] += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(threads * puts)))
    return threads * puts / (time.perf_counter() - began), errors


def measure(name: str, python: str, args: argparse.Namespace) -> Numbers:
    numbers = Numbers(name)
    puts = (args.threads, args.puts)
    log.info("%s: SQS SendMessage, empty queues and one at depth %d", name, args.depth)
    with served(python) as processes:
        numbers.sqs = sqs_depth(processes[-1], args.depth)
    for mode in args.modes:
        log.info("%s: %d x %d PutObject to one key, moto %s", name, *puts, mode)
        with served(python, remote=mode == "remote") as processes:
            numbers.puts[mode] = concurrent_puts(processes[-1].url, *puts)
        log.info("%s: %d MiB up and down, moto %s", name, args.size_mib, mode)
        with served(python, remote=mode == "remote") as processes:
            numbers.rss[mode] = large_object(processes, args.size_mib)
    return numbers


# The report.


def report(upstream: Numbers, fork: Numbers, args: argparse.Namespace) -> bool:
    rows: list[tuple[str, str, str, str, bool]] = []
    rows.append(
        (
            f"SQS send at depth {args.depth} / empty",
            _sqs(upstream),
            _sqs(fork),
            f">= {DEPTH_GOAL}x",
            fork.sqs["ratio"] >= DEPTH_GOAL,
        )
    )
    for mode in args.modes:
        label = "in process" if mode == "in-process" else "proxy + moto server"
        rows.append(
            (
                f"{args.size_mib} MiB put+get, peak RSS ({label})",
                _rss(upstream.rss[mode]),
                _rss(fork.rss[mode]),
                f"< {RSS_GOAL_MIB} MiB",
                fork.rss[mode]["peak"] < RSS_GOAL_MIB,
            )
        )
        rows.append(
            (
                f"{args.threads} x {args.puts} puts to one key, errors ({label})",
                _puts(*upstream.puts[mode]),
                _puts(*fork.puts[mode]),
                "0",
                not fork.puts[mode][1],
            )
        )
    print(f"| check | upstream moto | {fork.name} | goal | met |")
    print("|---|---|---|---|---|")
    for check, up, ours, goal, met in rows:
        print(f"| {check} | {up} | {ours} | {goal} | {'yes' if met else 'NO'} |")
    return all(met for *_, met in rows)


def _sqs(numbers: Numbers) -> str:
    sqs = numbers.sqs
    return (
        f"{sqs['ratio']:.2f}x ({sqs['deep']:.0f} vs {sqs['empty']:.0f}/s; "
        f"CPU {sqs['deep_cpu_ms']:.1f} vs {sqs['empty_cpu_ms']:.1f} ms)"
    )


def _rss(numbers: dict[str, float]) -> str:
    return (
        f"{numbers['peak']:.0f} MiB (put {numbers['put_s']:.1f} s, "
        f"get {numbers['get_s']:.1f} s)"
    )


def _puts(rate: float, errors: collections.Counter[str]) -> str:
    codes = ", ".join(f"{code} x{n}" for code, n in errors.items())
    return f"{errors.total()}{f' ({codes})' if codes else ''}, {rate:.0f}/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fork", description=__doc__)
    parser.add_argument("--depth", type=int, default=5000, help="queue depth")
    parser.add_argument("--size-mib", type=int, default=1024, help="object size")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--puts", type=int, default=500, help="per thread")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("in-process", "remote"),
        default=["in-process", "remote"],
        help="backends for the large object and the puts (default: both)",
    )
    parser.add_argument("--upstream-python", help="an interpreter with plain moto")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="bench: %(message)s", stream=sys.stderr
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    base = fork_base()
    plain = args.upstream_python or plain_moto_python(base)
    import moto

    fork = f"moto-ext {moto.__version__}"
    upstream_numbers = measure(f"moto {base}", plain, args)
    fork_numbers = measure(fork, sys.executable, args)
    return 0 if report(upstream_numbers, fork_numbers, args) else 1


if __name__ == "__main__":
    sys.exit(main())
