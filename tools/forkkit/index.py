"""Release sdists from a package index (PEP 503 / PEP 691 simple API).

Works with ``https://`` indexes (PyPI, pypiserver, devpi) and with ``file://``
folders laid out as a simple index. Downloads are verified by sha256 and kept
in a cache shared by every workspace on the machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import requests
from packaging.utils import (
    InvalidSdistFilename,
    canonicalize_name,
    parse_sdist_filename,
)
from packaging.version import Version

from forkkit.errors import (
    SdistHashMismatch,
    UpstreamReleaseNotFound,
    UpstreamUnreachable,
)
from forkkit.gitenv import redact

log = logging.getLogger(__name__)

_JSON = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_TIMEOUT = 60


@dataclass(frozen=True)
class ReleaseFile:
    """One sdist of one release on an index."""

    version: Version
    filename: str
    url: str
    sha256: str | None


def cache_dir() -> Path:
    """Where downloaded sdists are kept (``FORKKIT_CACHE`` overrides it)."""
    if env := os.environ.get("FORKKIT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "forkkit"


def list_sdists(index_url: str, project: str) -> list[ReleaseFile]:
    """Every sdist of *project* on the index, oldest version first."""
    page_url = urllib.parse.urljoin(
        index_url.rstrip("/") + "/", canonicalize_name(project) + "/"
    )
    body, content_type = _fetch_page(page_url, project)
    if content_type.startswith(_JSON):
        links = [
            (f["filename"], f["url"], f.get("hashes", {}).get("sha256"))
            for f in json.loads(body)["files"]
        ]
    else:
        links = _html_links(body.decode("utf-8", "replace"))

    files = []
    for filename, href, sha in links:
        try:
            name, version = parse_sdist_filename(filename)
        except InvalidSdistFilename:
            continue  # wheels and other files
        if name != canonicalize_name(project) or not filename.endswith(".tar.gz"):
            continue
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        if fragment.startswith("sha256=") and sha is None:
            sha = fragment.removeprefix("sha256=")
        files.append(ReleaseFile(version, filename, url, sha))
    return sorted(files, key=lambda f: f.version)


def find_sdist(index_url: str, project: str, version: str) -> ReleaseFile:
    """The sdist of *project* at *version*; raises when the index has none."""
    files = list_sdists(index_url, project)
    for release in files:
        if release.version == Version(version):
            return release
    newest = ", ".join(str(f.version) for f in files[-3:]) or "none"
    raise UpstreamReleaseNotFound(
        f"{redact(index_url)} has no sdist of {project} {version} "
        f"(newest there: {newest}); check base.version in the fork declaration"
    )


def fetch_sdist(release: ReleaseFile, expected_sha256: str | None) -> Path:
    """A verified local copy of *release*, downloaded once and then cached.

    *expected_sha256* is the declared hash; when it is None the index's hash
    is trusted (first import) and the caller records it.
    """
    want = expected_sha256 or release.sha256
    if want and release.sha256 and want != release.sha256:
        raise SdistHashMismatch(
            f"{release.filename}: the index lists sha256 {release.sha256} but the "
            f"declaration says {want}; a re-uploaded release must be reviewed "
            "before base.sha256 is changed"
        )
    if want:
        cached = cache_dir() / "sdists" / want / release.filename
        if cached.is_file() and _sha256(cached) == want:
            return cached

    log.info("downloading %s", release.filename)
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir()) as tmp:
        partial = Path(tmp) / release.filename
        _download(release.url, partial)
        got = _sha256(partial)
        if want and got != want:
            raise SdistHashMismatch(
                f"{release.filename}: downloaded sha256 is {got}, but {want} was "
                "expected; the file on the index differs from the declared base"
            )
        target = cache_dir() / "sdists" / got / release.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
    return target


def _fetch_page(url: str, project: str) -> tuple[bytes, str]:
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        for candidate in (path / "index.html", path):
            if candidate.is_file():
                return candidate.read_bytes(), "text/html"
        if path.is_dir():  # a bare folder of files, as pip --find-links reads it
            html = "".join(f'<a href="{p.name}">{p.name}</a>' for p in path.iterdir())
            return html.encode(), "text/html"
        raise UpstreamReleaseNotFound(f"{url}: the index has no project {project}")
    try:
        response = requests.get(url, headers={"Accept": _ACCEPT}, timeout=_TIMEOUT)
    except requests.RequestException as exc:
        raise UpstreamUnreachable(
            f"{redact(url)}: the package index did not answer ({type(exc).__name__}); "
            "check upstream.index-url and the network"
        ) from exc
    if response.status_code == 404:
        raise UpstreamReleaseNotFound(
            f"{redact(url)}: the index has no project {project}; check upstream.project"
        )
    if response.status_code != 200:
        raise UpstreamUnreachable(
            f"{redact(url)}: the package index answered HTTP {response.status_code}"
        )
    return response.content, response.headers.get("Content-Type", "text/html")


def _download(url: str, target: Path) -> None:
    if url.startswith("file:"):
        source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        _copy(source, target)
        return
    try:
        with requests.get(url, stream=True, timeout=_TIMEOUT) as response:
            response.raise_for_status()
            with target.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise UpstreamUnreachable(
            f"{redact(url)}: download failed ({type(exc).__name__}); try again"
        ) from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    with source.open("rb") as src, partial.open("wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            dst.write(chunk)
    os.replace(partial, target)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str | None]] = []
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
            href = self._href
            name = "".join(self._text).strip() or href.split("#")[0].rsplit("/")[-1]
            self.links.append((name, href, None))
            self._href = None


def _html_links(html: str) -> list[tuple[str, str, str | None]]:
    parser = _Links()
    parser.feed(html)
    return parser.links
