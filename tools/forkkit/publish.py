"""Publishing releases: reading what an index holds, uploading what it lacks.

Two kinds of target:

* the local index, a folder inside the project in PEP 503 layout
  (``<folder>/<project>/index.html`` with ``#sha256=`` links) that
  ``pip install --index-url file://...`` reads; it needs no server or account;
* a remote index that twine uploads to (``--repository`` from ``.pypirc`` or
  ``--repository-url``), read back through its simple API.

Uploading is idempotent by hash: a file already there with the same sha256 is
skipped; one with the same name and another sha256 is an ``IndexConflict``.
twine's own ``--skip-existing`` works with PyPI only, so the check is ours.
"""

from __future__ import annotations

import configparser
import hashlib
import html
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import requests
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from forkkit.build import PROVENANCE_FILE, clean_environment, sha256_file
from forkkit.errors import (
    AuthenticationFailed,
    IndexConflict,
    PublishFailed,
)
from forkkit.gitenv import redact

log = logging.getLogger(__name__)

_TIMEOUT = 60
_HTTP_ERROR = re.compile(r"HTTPError: (\d{3})")
T = TypeVar("T")


@dataclass(frozen=True)
class IndexFile:
    """One file of one distribution on an index."""

    filename: str
    version: Version
    url: str
    sha256: str | None


@dataclass(frozen=True)
class Target:
    """Where a release is published and read back from.

    ``folder`` is set for the local index; otherwise twine uploads with
    ``repository`` (a ``.pypirc`` name) or ``repository_url``, and
    ``index_url`` is the simple API that shows what the index holds.
    """

    index_url: str
    folder: Path | None = None
    repository: str | None = None
    repository_url: str | None = None
    config_file: Path | None = None
    attempts: int = 4
    backoff: float = 1.0

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    def shown(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return redact(self.repository or self.repository_url or self.index_url)


def local_target(folder: Path) -> Target:
    return Target(index_url=folder.resolve().as_uri() + "/", folder=folder)


def remote_target(
    repository: str | None,
    repository_url: str | None,
    index_url: str | None,
    config_file: Path | None,
) -> Target:
    """A twine target; the simple API URL is derived when not given."""
    url = repository_url
    if repository is not None:
        url = _pypirc_url(repository, config_file)
    assert url is not None
    return Target(
        index_url=index_url or simple_url_for(url),
        repository=repository,
        repository_url=repository_url,
        config_file=config_file,
    )


def simple_url_for(upload_url: str) -> str:
    """The simple API beside an upload URL (pypiserver, PyPI, TestPyPI)."""
    parts = urllib.parse.urlsplit(upload_url)
    if parts.path.rstrip("/").endswith("/legacy"):
        host = parts.netloc.replace("upload.pypi.org", "pypi.org")
        return urllib.parse.urlunsplit((parts.scheme, host, "/simple/", "", ""))
    return urllib.parse.urljoin(upload_url.rstrip("/") + "/", "simple/")


def _pypirc_url(name: str, config_file: Path | None) -> str:
    path = config_file or Path.home() / ".pypirc"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    if name in ("pypi", "testpypi") and not parser.has_option(name, "repository"):
        return {
            "pypi": "https://upload.pypi.org/legacy/",
            "testpypi": "https://test.pypi.org/legacy/",
        }[name]
    if not parser.has_option(name, "repository"):
        raise PublishFailed(
            f"{path}: no repository named {name!r} (a [{name}] section with a "
            "'repository' URL); add it or pass --repository-url"
        )
    return parser.get(name, "repository")


# Reading an index.


def list_files(target: Target, distribution: str) -> list[IndexFile]:
    """Every sdist and wheel of *distribution* on *target*, oldest first."""
    name = canonicalize_name(distribution)
    page_url = urllib.parse.urljoin(target.index_url.rstrip("/") + "/", name + "/")
    body = _with_retries(target, f"reading {redact(page_url)}", lambda: _page(page_url))
    if body is None:
        return []

    files = []
    for filename, href in _links(body):
        version = _version_of(filename, name)
        if version is None:
            continue
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        digest = (
            fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
        )
        files.append(IndexFile(filename, version, url, digest))
    return sorted(files, key=lambda f: (f.version, f.filename))


def read_file(target: Target, file: IndexFile) -> bytes:
    """The content of *file*; its sha256 is checked when the index lists one."""
    data = _with_retries(target, f"downloading {file.filename}", lambda: _get(file.url))
    assert data is not None
    if file.sha256 and hashlib.sha256(data).hexdigest() != file.sha256:
        raise PublishFailed(
            f"{file.filename}: the index lists sha256 {file.sha256} but serves "
            "different bytes; the index is inconsistent, fix it before releasing"
        )
    return data


def file_hash(target: Target, file: IndexFile) -> str:
    """The sha256 of *file*, from the listing or else by reading it."""
    if file.sha256:
        return file.sha256
    return hashlib.sha256(read_file(target, file)).hexdigest()


def provenance_of(
    target: Target, file: IndexFile, package: str
) -> dict[str, Any] | None:
    """The provenance record inside a released sdist, or None without one."""
    data = read_file(target, file)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if parts[1:] == [package, PROVENANCE_FILE] and member.isfile():
                    stream = tar.extractfile(member)
                    assert stream is not None
                    record: dict[str, Any] = json.loads(stream.read())
                    return record
    except (tarfile.TarError, ValueError, OSError):
        log.warning("%s: unreadable sdist on the index; ignoring it", file.filename)
    return None


def _version_of(filename: str, name: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            found, version, _, _ = parse_wheel_filename(filename)
        elif filename.endswith(".tar.gz"):
            found, version = parse_sdist_filename(filename)
        else:
            return None
    except (InvalidSdistFilename, InvalidWheelFilename):
        return None
    return version if found == name else None


class _Transient(Exception):
    """A failure worth trying again: no answer, or a 5xx."""


def _auth() -> tuple[str, str] | None:
    user, password = os.environ.get("TWINE_USERNAME"), os.environ.get("TWINE_PASSWORD")
    return (user, password) if user and password else None


def _page(url: str) -> bytes | None:
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        page = path / "index.html"
        return page.read_bytes() if page.is_file() else None
    response = _request(url, {"Accept": "text/html"})
    return None if response is None else response


def _get(url: str) -> bytes:
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        return path.read_bytes()
    data = _request(url, {})
    if data is None:
        raise PublishFailed(f"{redact(url)}: the index lists the file but has none")
    return data


def _request(url: str, headers: dict[str, str], hops: int = 3) -> bytes | None:
    try:
        response = requests.get(
            url, headers=headers, timeout=_TIMEOUT, allow_redirects=False
        )
        if response.status_code == 401 and _auth():
            response = requests.get(
                url,
                headers=headers,
                timeout=_TIMEOUT,
                auth=_auth(),
                allow_redirects=False,
            )
    except requests.RequestException as exc:
        raise _Transient(f"no answer ({type(exc).__name__})") from exc
    if response.is_redirect and hops:
        location = urllib.parse.urljoin(url, response.headers["Location"])
        if urllib.parse.urlsplit(location).netloc == urllib.parse.urlsplit(url).netloc:
            return _request(location, headers, hops - 1)
        # pypiserver sends projects it lacks to PyPI, where another owner's
        # distribution of the same name may live: that is not this index.
        log.warning(
            "%s redirects to %s; treating the project as absent from this index",
            redact(url),
            redact(location),
        )
        return None
    if response.status_code == 404:
        return None
    if response.status_code in (401, 403):
        raise AuthenticationFailed(
            f"{redact(url)}: the index refused to list files (HTTP "
            f"{response.status_code}); set TWINE_USERNAME and TWINE_PASSWORD"
        )
    if response.status_code >= 500:
        raise _Transient(f"HTTP {response.status_code}")
    if response.status_code != 200:
        raise PublishFailed(
            f"{redact(url)}: the index answered HTTP {response.status_code}"
        )
    return response.content


def _with_retries(target: Target, what: str, call: Callable[[], T]) -> T:
    delay = target.backoff
    for attempt in range(1, target.attempts + 1):
        try:
            return call()
        except _Transient as exc:
            if attempt == target.attempts:
                raise PublishFailed(
                    f"{what}: {exc}, {attempt} times; the index at "
                    f"{target.shown()} is not answering, try again later"
                ) from exc
            log.warning("%s: %s; trying again in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            name = "".join(self._text).strip()
            path = urllib.parse.urlsplit(self._href).path
            self.links.append((name or path.rsplit("/", 1)[-1], self._href))
            self._href = None


def _links(body: bytes) -> list[tuple[str, str]]:
    parser = _LinkParser()
    parser.feed(body.decode("utf-8", "replace"))
    return parser.links


# Writing the local index.


def local_pages(folder: Path, distribution: str, new: list[Path]) -> dict[Path, bytes]:
    """The project page and root page of the local index once *new* is added."""
    name = canonicalize_name(distribution)
    project = folder / name
    existing = sorted(project.glob("*")) if project.is_dir() else []
    hashes = {p.name: sha256_file(p) for p in existing if _dist(p)}
    hashes.update({p.name: sha256_file(p) for p in new})
    links = "\n".join(
        f'<a href="{html.escape(n)}#sha256={d}">{html.escape(n)}</a><br>'
        for n, d in sorted(hashes.items())
    )
    present = (
        {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    )
    projects = sorted(present | {name})
    root = "\n".join(f'<a href="{p}/">{p}</a><br>' for p in projects)
    return {
        project / "index.html": _page_html(f"Links for {name}", links),
        folder / "index.html": _page_html("Simple index", root),
    }


def _dist(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".whl", ".tar.gz"))


def _page_html(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html>\n<head><meta name="pypi:repository-version" '
        f'content="1.0"><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n'
        f"{body}\n</body>\n</html>\n"
    ).encode()


# Uploading with twine.


def upload(target: Target, files: list[Path], distribution: str) -> list[str]:
    """Upload the files *target* lacks; return the names uploaded.

    Raises ``IndexConflict`` when a file of the same name has other content,
    ``AuthenticationFailed`` at once on 401/403, and ``PublishFailed`` when
    the index keeps failing after retries with backoff.
    """
    present = {f.filename: f for f in list_files(target, distribution)}
    missing = []
    # Every conflict is found before anything is uploaded: no half release.
    for path in files:
        digest = sha256_file(path)
        if path.name in present:
            _same_or_conflict(target, present[path.name], digest)
            log.info("  %s is already on the index with the same sha256", path.name)
        else:
            missing.append((path, digest))
    for path, digest in missing:
        _upload_one(target, path, digest, distribution)
    return [path.name for path, _ in missing]


def _same_or_conflict(target: Target, file: IndexFile, digest: str) -> None:
    there = file_hash(target, file)
    if there != digest:
        raise IndexConflict(
            f"{target.shown()} already has {file.filename} with sha256 {there}, "
            f"but this build's is {digest}; an index never replaces a file, so "
            "this release cannot be published there (remove the file from the "
            "index, or release the next version)"
        )


def _upload_one(target: Target, path: Path, digest: str, distribution: str) -> None:
    command = [
        sys.executable,
        "-m",
        "twine",
        "upload",
        "--non-interactive",
        "--disable-progress-bar",
    ]
    if target.repository:
        command += ["--repository", target.repository]
    else:
        assert target.repository_url is not None
        command += ["--repository-url", target.repository_url]
    if target.config_file:
        command += ["--config-file", str(target.config_file)]
    command.append(str(path))

    def attempt() -> None:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=clean_environment(),
            check=False,
        )
        if result.returncode == 0:
            return
        output = redact(result.stdout + result.stderr)
        log.debug("twine: %s", output)
        match = _HTTP_ERROR.search(output)
        status = int(match.group(1)) if match else None
        if status in (401, 403):
            raise AuthenticationFailed(
                f"{target.shown()} refused the credentials (HTTP {status}) for "
                f"{path.name}; check TWINE_USERNAME/TWINE_PASSWORD or the keyring "
                "entry for this repository"
            )
        if status is None or status >= 500:
            last = output.strip().splitlines()[-1] if output.strip() else "no output"
            raise _Transient(f"upload of {path.name} failed: {last}")
        # 400/409: someone may have uploaded it meanwhile; the hash decides.
        for file in list_files(target, distribution):
            if file.filename == path.name:
                _same_or_conflict(target, file, digest)
                return
        raise PublishFailed(
            f"{target.shown()} rejected {path.name} with HTTP {status}: "
            + " ".join(output.split())[-300:]
        )

    log.info("  uploading %s", path.name)
    _with_retries(target, f"uploading {path.name}", attempt)
