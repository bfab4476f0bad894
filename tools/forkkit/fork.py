"""Fork declarations: ``forks/<name>.toml``, the single source of truth.

A declaration says where upstream releases come from, which release the series
applies to (the base), how the fork's distribution is named and versioned, and
where its series lives. Loading validates every key and reports unknown or
missing keys by file and dotted key name.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomlkit
from packaging.version import InvalidVersion, Version
from tomlkit.exceptions import ParseError

from forkkit.errors import DeclarationError

SourceKind = Literal["index", "git"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Upstream:
    """Where upstream releases come from."""

    source: SourceKind
    project: str
    index_url: str
    git_url: str | None
    tag_pattern: str

    def tag_for(self, version: str) -> str:
        """The git tag that carries *version*."""
        return self.tag_pattern.format(version=version)

    def version_of_tag(self, tag: str) -> str | None:
        """The version a tag names, or None when the tag is not a release tag."""
        prefix, _, suffix = self.tag_pattern.partition("{version}")
        if not (tag.startswith(prefix) and tag.endswith(suffix)):
            return None
        return tag[len(prefix) : len(tag) - len(suffix)] or None


@dataclass(frozen=True)
class Base:
    """The upstream release the series applies to."""

    version: str
    sha256: str | None


@dataclass(frozen=True)
class Fork:
    """One forked library, as declared in ``forks/<name>.toml``."""

    name: str
    path: Path
    distribution: str
    series_dir: Path
    upstream: Upstream
    base: Base
    version_scheme: str
    guards: dict[str, list[str]] = field(default_factory=dict)
    release: dict[str, Any] = field(default_factory=dict)


# The keys a declaration may hold: name -> (required, type, description).
_SCHEMA: dict[str, dict[str, tuple[bool, type, str]]] = {
    "": {
        "name": (True, str, "the fork's name, as in forks/<name>.toml"),
        "distribution": (True, str, "the distribution name releases use"),
        "series": (True, str, "folder of the series, relative to the project"),
    },
    "upstream": {
        "source": (True, str, '"index" or "git": where the base is taken from'),
        "project": (True, str, "the project's name on the package index"),
        "index-url": (False, str, "the package index's simple API URL"),
        "git-url": (False, str, "any URL git accepts, a local path included"),
        "tag-pattern": (False, str, 'release tags, with "{version}" in them'),
    },
    "base": {
        "version": (True, str, "the upstream release the series applies to"),
        "sha256": (False, str, "sha256 of the release sdist (index source)"),
    },
    "version": {
        "scheme": (True, str, '"post": releases are <base>.post<N>'),
    },
}
_OPEN_TABLES = {"guards", "release"}
DEFAULT_INDEX_URL = "https://pypi.org/simple/"


def load(path: Path, root: Path) -> Fork:
    """Read and validate the declaration at *path*; *root* is the project."""
    shown = _shown(path, root)
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DeclarationError(f"{shown}: no such fork declaration") from exc
    except ParseError as exc:
        raise DeclarationError(f"{shown}: not valid TOML: {exc}") from exc

    data = document.unwrap()
    _check_keys(data, shown)
    top, up, base = data, data["upstream"], data["base"]

    name = _match(top["name"], _NAME, shown, "name", "lower-case letters, digits")
    if name != path.stem:
        raise DeclarationError(
            f"{shown}: key 'name' is {name!r} but the file is named {path.name}; "
            "rename one so that they agree"
        )
    source = up["source"]
    if source not in ("index", "git"):
        raise DeclarationError(
            f'{shown}: key \'upstream.source\' is {source!r}; use "index" or "git"'
        )
    if source == "git" and not up.get("git-url"):
        raise DeclarationError(
            f"{shown}: key 'upstream.git-url' is missing but upstream.source is "
            '"git"; add the repository URL or set source = "index"'
        )
    pattern = up.get("tag-pattern", "{version}")
    fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    if fields != ["version"]:
        raise DeclarationError(
            f"{shown}: key 'upstream.tag-pattern' is {pattern!r}; it must hold "
            "'{version}' exactly once and no other field"
        )
    _version(base["version"], shown, "base.version")
    sha = base.get("sha256") or None
    if sha is not None:
        _match(sha, _SHA256, shown, "base.sha256", "64 lower-case hex digits")
    if data["version"]["scheme"] != "post":
        raise DeclarationError(
            f"{shown}: key 'version.scheme' is {data['version']['scheme']!r}; "
            'the only scheme is "post" (<base>.post<N>)'
        )
    guards = _guards(data.get("guards", {}), shown)

    return Fork(
        name=name,
        path=path,
        distribution=top["distribution"],
        series_dir=root / top["series"],
        upstream=Upstream(
            source=source,
            project=up["project"],
            index_url=up.get("index-url", DEFAULT_INDEX_URL),
            git_url=up.get("git-url"),
            tag_pattern=pattern,
        ),
        base=Base(version=base["version"], sha256=sha),
        version_scheme="post",
        guards=guards,
        release=dict(data.get("release", {})),
    )


def set_base(fork: Fork, version: str, sha256: str | None) -> str:
    """The declaration's text with its base changed, formatting kept."""
    document = tomlkit.parse(fork.path.read_text(encoding="utf-8"))
    table = document["base"]
    assert isinstance(table, tomlkit.items.Table)
    table["version"] = version
    if sha256 is None:
        table.pop("sha256", None)
    else:
        table["sha256"] = sha256
    return tomlkit.dumps(document)


def _check_keys(data: dict[str, Any], shown: str) -> None:
    for table, keys in _SCHEMA.items():
        where = data if not table else data.get(table)
        if where is None:
            raise DeclarationError(
                f"{shown}: table [{table}] is missing; add it with the keys "
                + ", ".join(k for k, (req, _, _) in keys.items() if req)
            )
        if not isinstance(where, dict):
            raise DeclarationError(f"{shown}: key '{table}' must be a table")
        for key, (required, kind, what) in keys.items():
            dotted = f"{table}.{key}" if table else key
            if key not in where:
                if required:
                    raise DeclarationError(
                        f"{shown}: key '{dotted}' is missing; set it to {what}"
                    )
                continue
            if not isinstance(where[key], kind):
                raise DeclarationError(
                    f"{shown}: key '{dotted}' must be a {kind.__name__} ({what})"
                )
        allowed = set(keys)
        if not table:
            allowed |= (set(_SCHEMA) - {""}) | _OPEN_TABLES
        for key in where:
            if key not in allowed:
                dotted = f"{table}.{key}" if table else key
                raise DeclarationError(
                    f"{shown}: unknown key '{dotted}'; the keys here are "
                    + ", ".join(sorted(allowed))
                )


def _guards(raw: Any, shown: str) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise DeclarationError(f"{shown}: key 'guards' must be a table")
    guards: dict[str, list[str]] = {}
    for patch, tests in raw.items():
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise DeclarationError(
                f"{shown}: key 'guards.{patch}' must be a list of pytest node ids"
            )
        guards[patch] = list(tests)
    return guards


def _match(
    value: str, pattern: re.Pattern[str], shown: str, key: str, what: str
) -> str:
    if not pattern.match(value):
        raise DeclarationError(f"{shown}: key '{key}' is {value!r}; expected {what}")
    return value


def _version(value: str, shown: str, key: str) -> Version:
    try:
        return Version(value)
    except InvalidVersion as exc:
        raise DeclarationError(
            f"{shown}: key '{key}' is {value!r}, which is not a PEP 440 version"
        ) from exc


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
