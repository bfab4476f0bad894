"""`python -m proxy` as users run it: flags and environment, the URL on stdout,
one log line per request, the health endpoint, and a clean stop on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from proxy.cli import Settings, parse_args
from proxy.health import read_provenance
from tests.proxy.proxy_support import (
    CREDENTIALS,
    GeneratedFile,
    MotoServer,
    free_port,
    peak_rss_mib,
    pinned_release,
)

ROOT = Path(__file__).resolve().parents[2]


class Served:
    """A `python -m proxy` subprocess and what it printed."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stderr


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_serves_logs_each_request_and_stops_cleanly(
    served: list[Served], signum: int
) -> None:
    server = Served(["--port", "0"])
    served.append(server)
    s3 = boto3.client("s3", endpoint_url=server.url, **CREDENTIALS)

    s3.list_buckets()
    code, stderr = server.stop(signum)

    assert server.url.startswith("http://127.0.0.1:")
    assert code == 0
    access = [line for line in stderr.splitlines() if "proxy.access" in line]
    assert len(access) == 1
    assert access[0].split("proxy.access: ")[1].startswith("s3 ListBuckets GET 200 ")
    assert access[0].endswith("ms")
    assert f"received {signal.Signals(signum).name}, shutting down" in stderr
    assert stderr.rstrip().endswith("stopped")


def test_environment_sets_port_backend_and_log_level(served: list[Served]) -> None:
    port = free_port()
    server = Served(
        [],
        env={
            "PROXY_PORT": str(port),
            "PROXY_LOG_LEVEL": "warning",
            "PROXY_BACKEND_URL": "http://127.0.0.1:9",
        },
    )
    served.append(server)

    health = requests.get(server.url + "/_proxy/health", timeout=30).json()
    listed = requests.get(server.url + "/", timeout=30)
    code, stderr = server.stop()

    assert server.url == f"http://127.0.0.1:{port}"
    assert health["backend"] == {
        "kind": "remote",
        "url": "http://127.0.0.1:9",
        "reachable": False,
    }
    assert health["provenance"] == pinned_release()["provenance"]
    names = [r["name"] for r in health["listeners"]]
    assert {"apigateway", "cors", "s3-cors", "sns-http", "dynamodb-ttl"} <= set(names)
    assert listed.status_code == 502
    assert "proxy.access" not in stderr
    assert code == 0


def test_a_large_upload_streams_through_the_remote_backend(
    served: list[Served], moto_server: MotoServer
) -> None:
    server = Served(["--port", "0", "--backend-url", moto_server.url])
    served.append(server)
    s3 = boto3.client("s3", endpoint_url=server.url, **CREDENTIALS)
    s3.create_bucket(Bucket="streamed-upload")
    size = 128 << 20

    put = requests.put(
        server.url + "/streamed-upload/big", data=GeneratedFile(size), timeout=120
    )
    peak = peak_rss_mib(server.process.pid)
    stored = s3.head_object(Bucket="streamed-upload", Key="big")["ContentLength"]
    s3.delete_object(Bucket="streamed-upload", Key="big")

    assert put.status_code == 200
    assert stored == size
    assert peak < 100, f"the proxy peaked at {peak:.0f} MiB for a 128 MiB upload"


def test_a_large_object_streams_both_ways_through_moto_in_process(
    served: list[Served],
) -> None:
    # moto-ext spools a large PutObject to disk and streams GetObject; the
    # in-process backend must hand it the body as a stream, and pass the
    # object on in chunks, for that to keep memory flat.
    server = Served(["--port", "0", "--no-entry-points"])
    served.append(server)
    s3 = boto3.client("s3", endpoint_url=server.url, **CREDENTIALS)
    s3.create_bucket(Bucket="in-process-large")
    before = peak_rss_mib(server.process.pid)
    size = 128 << 20

    put = requests.put(
        server.url + "/in-process-large/big", data=GeneratedFile(size), timeout=120
    )
    body = s3.get_object(Bucket="in-process-large", Key="big")["Body"]
    received = sum(len(chunk) for chunk in body.iter_chunks(1 << 20))
    growth = peak_rss_mib(server.process.pid) - before

    assert put.status_code == 200
    assert received == size
    assert growth < 64, f"the proxy grew by {growth:.0f} MiB for a 128 MiB object"


def test_tools_serve_passes_flags_through() -> None:
    result = subprocess.run(
        [str(ROOT / "tools" / "serve"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0
    assert "--backend-url" in result.stdout
    assert "PROXY_PORT" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port 70000 is not a port number"),
        (["--threads", "0"], "--threads 0 must be at least 1"),
        (["--log-level", "loud"], "invalid choice: 'loud'"),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_HOST", "127.0.0.2")
    monkeypatch.setenv("PROXY_PORT", "5000")

    settings = parse_args(["--port", "6000", "--listener", "a:b"])

    assert settings == Settings(host="127.0.0.2", port=6000, listeners=("a:b",))


def test_an_unloadable_listener_stops_startup_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", "0", "--listener", "nope:Nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot load listener 'nope:Nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_provenance_is_read_from_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fakemoto"
    package.mkdir()
    (package / "__init__.py").write_text("")
    record = {
        "fork": "moto",
        "distribution": "moto-ext",
        "version": "5.2.5.post1",
        "upstream": "moto",
        "base": {"version": "5.2.5"},
        "patches": [],
    }
    (package / "_provenance.json").write_text(json.dumps(record))
    monkeypatch.syspath_prepend(str(tmp_path))

    assert read_provenance("fakemoto") == record
    assert read_provenance("json") is None
    sys.modules.pop("fakemoto", None)
