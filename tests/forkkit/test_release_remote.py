"""tools/release-fork against a real pypiserver on a free loopback port."""

from __future__ import annotations

import base64
import hashlib
import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from forkkit.commands import release_fork
from forkkit.project import Project
from tests.forkkit.releases import tiny_project, tiny_upstream

USER, PASSWORD = "releaser", "s3cret-pass"


@dataclass
class Server:
    url: str
    packages: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def pypiserver(tmp_path: Path) -> Iterator[Server]:
    """pypiserver with an htpasswd file: uploads need releaser's password."""
    # Apache's {SHA} scheme, which pypiserver's passlib reads.
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    (tmp_path / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    packages = tmp_path / "packages"
    packages.mkdir()
    port = free_port()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pypiserver",
            "run",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-P",
            str(tmp_path / "htpasswd"),
            "-a",
            "update",
            "--disable-fallback",
            str(packages),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as server:
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(100):
                try:
                    if requests.get(url + "simple/", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.1)
            else:
                pytest.fail("pypiserver did not start")
            yield Server(url, packages)
        finally:
            server.terminate()
            server.wait(10)


@pytest.fixture
def failing_once(pypiserver: Server) -> Iterator[str]:
    """A proxy in front of pypiserver whose first six uploads answer 500.

    twine itself tries an upload five times when the index answers 5xx; the
    sixth failure makes it give up, so the release's own retry must recover.
    """
    failures = [6]

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.command == "POST" and failures[0]:
                failures[0] -= 1
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = requests.request(
                self.command,
                pypiserver.url.rstrip("/") + self.path,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=30,
            )
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in (
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "content-encoding",
                ):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}/"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forkkit-cache")


@pytest.fixture
def tiny(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    release_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> Project:
    upstream, sha = tiny_upstream(tmp_path / "upstream")
    project = tiny_project(tmp_path / "project", upstream, sha)
    monkeypatch.setenv("FORKKIT_ROOT", str(project.root))
    monkeypatch.setenv("FORKKIT_CACHE", str(release_cache))
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pypirc, no keyring config
    caplog.set_level(logging.INFO)
    return project


def run_cli(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *args: str
) -> tuple[int, str, str]:
    caplog.clear()
    status = release_fork.main(list(args))
    out, err = capsys.readouterr()
    return status, out, caplog.text + err


def test_release_uploads_to_pypiserver_once_and_pins(
    tiny: Project,
    pypiserver: Server,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, out, err = run_cli(
        capsys, caplog, "tiny", "--repository-url", pypiserver.url
    )

    assert status == 0, err
    assert out.splitlines()[0] == "tiny-ext 1.0.post1"
    assert sorted(p.name for p in pypiserver.packages.iterdir()) == [
        "tiny_ext-1.0.post1-py3-none-any.whl",
        "tiny_ext-1.0.post1.tar.gz",
    ]
    assert '"tiny-ext==1.0.post1"' in (tiny.root / "pyproject.toml").read_text()
    assert PASSWORD not in out + err

    status, _, err = run_cli(capsys, caplog, "tiny", "--repository-url", pypiserver.url)
    assert status == 0
    assert "nothing to do: tiny-ext 1.0.post1" in err


def test_a_wrong_password_stops_at_once_and_pins_nothing(
    tiny: Project,
    pypiserver: Server,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWINE_PASSWORD", "wrong-guess")

    status, _, err = run_cli(capsys, caplog, "tiny", "--repository-url", pypiserver.url)

    assert status == 7
    assert f"error: {pypiserver.url} refused the credentials (HTTP 403)" in err
    assert "trying again" not in err
    assert "wrong-guess" not in err
    assert not (tiny.root / "requirements").exists()
    assert list(pypiserver.packages.iterdir()) == []


def test_an_index_failing_with_500_is_retried_with_backoff_until_it_recovers(
    tiny: Project,
    pypiserver: Server,
    failing_once: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, _, err = run_cli(
        capsys,
        caplog,
        "tiny",
        "--repository-url",
        failing_once,
        "--index-url",
        pypiserver.url + "simple/",
    )

    assert status == 0, err
    assert "trying again in 1.0s" in err
    assert len(list(pypiserver.packages.iterdir())) == 2


def test_the_same_version_with_other_content_on_the_index_is_refused(
    tiny: Project,
    pypiserver: Server,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, _, err = run_cli(capsys, caplog, "tiny")  # pinned on the local index
    assert status == 0, err
    (pypiserver.packages / "tiny_ext-1.0.post1.tar.gz").write_bytes(b"another build")
    before = (tiny.root / "requirements" / "tiny-ext.txt").read_bytes()

    status, _, err = run_cli(
        capsys, caplog, "tiny", "--pinned", "--repository-url", pypiserver.url
    )

    assert status == 7
    assert "already has tiny_ext-1.0.post1.tar.gz with sha256" in err
    assert (tiny.root / "requirements" / "tiny-ext.txt").read_bytes() == before
    assert (pypiserver.packages / "tiny_ext-1.0.post1.tar.gz").read_bytes() == (
        b"another build"
    )
    assert os.listdir(pypiserver.packages) == ["tiny_ext-1.0.post1.tar.gz"]
