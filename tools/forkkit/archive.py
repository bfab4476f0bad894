"""Unpacking release sdists safely.

An sdist is untrusted input: members that would land outside the target
folder, links, devices and git metadata are refused before anything is
written.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from forkkit.errors import UnsafeArchive


@dataclass(frozen=True)
class Member:
    """A regular file of an sdist, relative to its top-level folder."""

    path: str
    executable: bool
    mtime: int
    data: bytes


def read_sdist(archive: Path) -> Iterator[Member]:
    """Yield the files of *archive* with its single top-level folder dropped.

    The archive is read once, front to back. A member that could write outside
    the tree, a link, a device or git metadata stops the whole archive, so a
    caller must not keep what it received before the ``UnsafeArchive``.
    """
    top: str | None = None
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            relative = _checked_path(member, archive)
            name = PurePosixPath(member.name)
            first = name.parts[0] if name.parts else ""
            top = top or first
            if first != top:
                raise UnsafeArchive(
                    f"{archive.name}: an sdist holds one top-level folder, this one "
                    f"also holds {first!r} besides {top!r}"
                )
            if relative is None or member.isdir():
                continue
            source = tar.extractfile(member)
            if source is None:
                raise UnsafeArchive(
                    f"{archive.name}: member {member.name} is unreadable"
                )
            with source:
                data = source.read()
            yield Member(
                str(relative), bool(member.mode & 0o111), int(member.mtime), data
            )


def _checked_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UnsafeArchive(
            f"{archive.name}: member {member.name!r} would be written outside "
            "the tree; refusing the whole archive"
        )
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise UnsafeArchive(
            f"{archive.name}: member {member.name!r} is a {kind}; sdists may hold "
            "only files and folders, so the whole archive is refused"
        )
    if ".git" in name.parts:
        raise UnsafeArchive(
            f"{archive.name}: member {member.name!r} is git metadata; refusing it"
        )
    relative = PurePosixPath(*name.parts[1:]) if len(name.parts) > 1 else None
    return relative
