"""Discovering upstream releases newer than a fork's base.

Releases come from the upstream source the declaration names: release tags of
a git repository (matched with ``upstream.tag-pattern``; the URL may be a
local path) or the sdists a package index lists. Versions are ordered by
PEP 440; pre-releases and development releases are left out unless asked for.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from forkkit import index
from forkkit.errors import UpstreamReleaseNotFound, UpstreamUnreachable
from forkkit.fork import Fork
from forkkit.gitenv import ISOLATED_ENV, redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Where a sync goes: the releases to pass through, the last one the target.

    ``steps`` is empty when the base is already the target.
    """

    base: str
    target: str
    steps: tuple[str, ...]
    newer: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.steps


def upstream_versions(fork: Fork) -> list[Version]:
    """Every release version upstream publishes, oldest first."""
    up = fork.upstream
    if up.source == "git":
        assert up.git_url is not None
        found = {v for tag in _remote_tags(up.git_url) if (v := _parse(tag, fork))}
    else:
        found = {f.version for f in index.list_sdists(up.index_url, up.project)}
    return sorted(found)


def plan(
    fork: Fork,
    *,
    to: str | None = None,
    step: bool = False,
    pre: bool = False,
    versions: list[Version] | None = None,
) -> Plan:
    """The releases a sync of *fork* passes through to reach its target.

    The target is *to* when given, else the newest release. Without *step*
    the series goes straight to the target; with it, through every release
    between the base and the target. Raises ``UpstreamReleaseNotFound`` when
    *to* is not an upstream release, or is older than the base.
    """
    base = Version(fork.base.version)
    known = versions if versions is not None else upstream_versions(fork)
    wanted = [v for v in known if pre or not (v.is_prerelease or v.is_devrelease)]
    newer = [v for v in wanted if v > base]
    source = _source_name(fork)

    if to is None:
        target = newer[-1] if newer else base
    else:
        target = _version(to)
        if target not in known and target != base:
            shown = ", ".join(str(v) for v in newer[-5:]) or "none"
            raise UpstreamReleaseNotFound(
                f"{source} has no release {to} (newer than the base "
                f"{base}: {shown}); pick one of those with --to"
            )
        if target < base:
            raise UpstreamReleaseNotFound(
                f"--to {to} is older than the base {base}; sync-upstream only "
                "moves the series forward"
            )
        if target.is_prerelease and target not in newer:
            newer.append(target)
    between = [v for v in newer if v <= target]
    steps = between if step else ([target] if target != base else [])
    log.debug("upstream releases newer than %s: %s", base, [str(v) for v in newer])
    return Plan(
        base=str(base),
        target=str(target),
        steps=tuple(str(v) for v in steps),
        newer=tuple(str(v) for v in newer),
    )


def _remote_tags(url: str) -> list[str]:
    result = subprocess.run(
        ["git", "ls-remote", "--tags", "--refs", url],
        env={**ISOLATED_ENV, "PATH": _path()},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        detail = redact(lines[-1] if lines else f"status {result.returncode}")
        raise UpstreamUnreachable(
            f"{redact(url)}: git ls-remote failed: {detail}; check "
            "upstream.git-url and the network"
        )
    tags = []
    for line in result.stdout.splitlines():
        _, _, ref = line.partition("\t")
        if ref.startswith("refs/tags/"):
            tags.append(ref.removeprefix("refs/tags/"))
    return tags


def _parse(tag: str, fork: Fork) -> Version | None:
    text = fork.upstream.version_of_tag(tag)
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion as exc:
        raise UpstreamReleaseNotFound(
            f"--to {text!r} is not a PEP 440 version"
        ) from exc


def _source_name(fork: Fork) -> str:
    up = fork.upstream
    if up.source == "git":
        return redact(up.git_url or "")
    return f"{redact(up.index_url)} ({up.project})"


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")
