"""The patch series: the ``series`` file and the patch mails it lists.

Everything here is parsing and checking of plain text, without git, so it can
be tested and reused without a repository.
"""

from __future__ import annotations

import email.header
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from forkkit.errors import SeriesError

STATUSES = ("Pending", "Submitted", "Backport", "Inappropriate", "Denied")
_STATUS_LINE = re.compile(r"^Upstream-Status:\s*(?P<value>.*?)\s*$", re.M)
_STATUS = re.compile(
    r"^(?P<kind>Pending|Submitted|Backport|Inappropriate|Denied)"
    r"(?:\s+\[(?P<ref>[^\]]+)\])?$"
)
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class UpstreamStatus:
    """The ``Upstream-Status:`` trailer of a patch."""

    kind: str
    ref: str | None

    def __str__(self) -> str:
        return f"{self.kind} [{self.ref}]" if self.ref else self.kind


@dataclass(frozen=True)
class Hunk:
    """One hunk of a file diff: its header and the lines it expects and writes."""

    number: int
    header: str
    old_start: int
    old_count: int
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclass(frozen=True)
class FileDiff:
    """The part of a patch that changes one file."""

    old_path: str | None
    new_path: str | None
    hunks: tuple[Hunk, ...]

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or "?"


@dataclass(frozen=True)
class Patch:
    """One patch file of the series, parsed."""

    file: str
    text: str
    author: str
    date: str
    subject: str
    body: str
    status: UpstreamStatus
    diff: str
    files: tuple[FileDiff, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass(frozen=True)
class SeriesEntry:
    """A line of the ``series`` file that names a patch."""

    file: str
    line: int


@dataclass
class Series:
    """The ordered patches of a fork."""

    folder: Path
    entries: list[SeriesEntry]
    header: list[str] = field(default_factory=list)

    @property
    def series_file(self) -> Path:
        return self.folder / "series"

    @property
    def names(self) -> list[str]:
        return [e.file for e in self.entries]


@dataclass(frozen=True)
class FailedHunk:
    """A hunk whose expected lines are not found in the new base."""

    path: str
    hunk: Hunk
    missing_file: bool = False


@dataclass
class Conflict:
    """Why one patch stopped the series: every file and hunk that failed."""

    patch: str
    subject: str
    hunks: list[FailedHunk]
    conflict_lines: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"patch {self.patch} ({self.subject}) does not apply"]
        for failed in self.hunks:
            where = f"{failed.path}: hunk #{failed.hunk.number} {failed.hunk.header}"
            if failed.missing_file:
                where = f"{failed.path}: the file is not in the new base"
            lines.append(f"  {where}")
        for path, numbers in sorted(self.conflict_lines.items()):
            shown = ", ".join(str(n) for n in numbers)
            lines.append(f"  {path}: conflict markers at line {shown}")
        return "\n".join(lines)


def read_series(folder: Path, shown: str) -> Series:
    """Parse ``<folder>/series``; *shown* is the folder as the user sees it."""
    path = folder / "series"
    if not path.is_file():
        raise SeriesError(
            f"{shown}/series: no series file; create it with one patch file name "
            "per line (an empty file is an empty series)"
        )
    entries: list[SeriesEntry] = []
    header: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if not entries:
                header.append(raw)
            continue
        name = line.split("#", 1)[0].strip()
        if "/" in name or name.startswith("."):
            raise SeriesError(
                f"{shown}/series:{number}: {name!r} is not a file name in {shown}; "
                "list bare file names"
            )
        if name in seen:
            raise SeriesError(
                f"{shown}/series:{number}: {name} is listed twice (first at line "
                f"{seen[name]}); remove one of the lines"
            )
        if not (folder / name).is_file():
            raise SeriesError(
                f"{shown}/series:{number}: {name} does not exist in {shown}; "
                "add the file or remove the line"
            )
        seen[name] = number
        entries.append(SeriesEntry(name, number))
    return Series(folder, entries, header)


def read_patch(path: Path, shown: str) -> Patch:
    """Parse and check one patch file; *shown* is its path as the user sees it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SeriesError(f"{shown}: not UTF-8 text, so not a patch mail") from exc
    return parse_patch(text, path.name, shown)


def parse_patch(text: str, name: str, shown: str) -> Patch:
    """Parse the text of a ``git format-patch`` mail."""
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("From "):
        lines = lines[1:]
    diff_at = next(
        (i for i, line in enumerate(lines) if line.startswith("diff --git ")), None
    )
    if diff_at is None:
        raise SeriesError(
            f"{shown}: no 'diff --git' section, so this is not a patch; export "
            "it with tools/patches export"
        )
    head, _, body = "".join(lines[:diff_at]).partition("\n\n")
    headers = HeaderParser().parsestr(head + "\n")
    subject = _decoded(headers.get("Subject"))
    author = _decoded(headers.get("From"))
    if not subject or not author:
        missing = "Subject" if not subject else "From"
        raise SeriesError(
            f"{shown}: no {missing}: header; a patch is a git format-patch mail "
            "with From:, Date: and Subject: headers"
        )

    body = _strip_separator(body)
    status = _status(body, shown)
    diff = "".join(lines[diff_at:])
    return Patch(
        file=name,
        text=text,
        author=author,
        date=_decoded(headers.get("Date")),
        subject=" ".join(subject.split()),
        body=body,
        status=status,
        diff=diff,
        files=tuple(parse_diff(diff)),
    )


def parse_diff(diff: str) -> list[FileDiff]:
    """Split a git diff into files and hunks."""
    files: list[FileDiff] = []
    old: str | None = None
    new: str | None = None
    hunks: list[Hunk] = []
    current: tuple[str, int, int, list[str], list[str]] | None = None

    def close_hunk() -> None:
        nonlocal current
        if current is not None:
            header, start, count, before, after = current
            hunks.append(
                Hunk(len(hunks) + 1, header, start, count, tuple(before), tuple(after))
            )
            current = None

    def close_file() -> None:
        nonlocal hunks, old, new
        close_hunk()
        if old is not None or new is not None:
            files.append(FileDiff(old, new, tuple(hunks)))
        old = new = None
        hunks = []

    for line in diff.splitlines():
        if line.startswith("diff --git "):
            close_file()
            parts = line[len("diff --git ") :].split(" b/", 1)
            old = parts[0].removeprefix("a/")
            new = parts[1] if len(parts) > 1 else old
        elif current is None and line.startswith("--- "):
            old = None if line == "--- /dev/null" else line[6:]
        elif current is None and line.startswith("+++ "):
            new = None if line == "+++ /dev/null" else line[6:]
        elif match := _HUNK.match(line):
            close_hunk()
            count = int(match.group(2)) if match.group(2) is not None else 1
            current = (line, int(match.group(1)), count, [], [])
        elif current is not None and line[:1] in (" ", "-", "+", ""):
            _, _, _, before, after = current
            if line[:1] in (" ", ""):
                before.append(line[1:])
                after.append(line[1:])
            elif line[:1] == "-":
                before.append(line[1:])
            else:
                after.append(line[1:])
        elif current is not None and line.startswith("\\"):
            continue  # "\ No newline at end of file"
        else:
            close_hunk()
    close_file()
    return files


def failing_hunks(
    patch: Patch, read_base: Callable[[str], str | None]
) -> list[FailedHunk]:
    """The hunks of *patch* whose expected lines are nowhere in the base.

    *read_base* returns a file's text in the base, or None when it is absent.
    A hunk passes when its context and removed lines appear together at any
    offset, which is what ``git apply`` accepts without fuzz.
    """
    failed: list[FailedHunk] = []
    for diff in patch.files:
        if diff.old_path is None:
            continue  # a new file: it can only collide, which git reports
        text = read_base(diff.old_path)
        if text is None:
            first = diff.hunks[0] if diff.hunks else Hunk(0, "", 0, 0, (), ())
            failed.append(FailedHunk(diff.old_path, first, missing_file=True))
            continue
        base_lines = text.splitlines()
        for hunk in diff.hunks:
            if not _contains(base_lines, list(hunk.before)):
                failed.append(FailedHunk(diff.old_path, hunk))
    return failed


def content_key(patch_text: str) -> str:
    """A fingerprint of a patch that ignores where its hunks sit.

    Two exports of the same change whose context only moved (other line
    numbers, other blob ids) have the same key.
    """
    kept = []
    for line in patch_text.splitlines():
        if line.startswith("index "):
            continue
        if match := _HUNK.match(line):
            line = "@@" + line[match.end() :]
        kept.append(line)
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()


def slug(subject: str) -> str:
    """A file name for a patch with this subject."""
    name = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")
    return (name[:60].rstrip("-") or "patch") + ".patch"


def _status(body: str, shown: str) -> UpstreamStatus:
    found = _STATUS_LINE.findall(body)
    if not found:
        raise SeriesError(
            f"{shown}: no Upstream-Status trailer; end the message with a line "
            "such as 'Upstream-Status: Pending' (or Submitted [url], Backport "
            "[commit or version], Inappropriate [reason], Denied [url])"
        )
    if len(found) > 1:
        raise SeriesError(f"{shown}: Upstream-Status is given {len(found)} times")
    value = found[0]
    match = _STATUS.match(value)
    if not match:
        raise SeriesError(
            f"{shown}: Upstream-Status {value!r} is not valid; use one of Pending, "
            "Submitted [url], Backport [ref], Inappropriate [reason], Denied [url]"
        )
    kind, ref = match.group("kind"), match.group("ref")
    if kind == "Pending" and ref:
        raise SeriesError(f"{shown}: Upstream-Status Pending takes no [reference]")
    if kind != "Pending" and not ref:
        raise SeriesError(
            f"{shown}: Upstream-Status {kind} needs a reference in brackets, "
            f"e.g. '{kind} [...]'"
        )
    why = _STATUS_LINE.sub("", body).strip()
    if not why:
        raise SeriesError(
            f"{shown}: the message has no body; say why the patch exists above "
            "the Upstream-Status line"
        )
    return UpstreamStatus(kind, ref)


def _strip_separator(body: str) -> str:
    lines = body.splitlines()
    while lines and lines[-1].strip() in ("", "---"):
        lines.pop()
    return "\n".join(lines)


def _decoded(value: str | None) -> str:
    if value is None:
        return ""
    parts = email.header.decode_header(value)
    return "".join(
        p.decode(enc or "utf-8") if isinstance(p, bytes) else p for p, enc in parts
    )


def _contains(haystack: list[str], needle: list[str]) -> bool:
    if not needle:
        return True
    first = needle[0]
    size = len(needle)
    for start in range(len(haystack) - size + 1):
        if haystack[start] == first and haystack[start : start + size] == needle:
            return True
    return False
