"""What a sync-upstream run found, and how it is shown.

The same ``SyncReport`` is rendered as Markdown (a pull-request body and a
GitHub step summary), as JSON (for machines; the schema is in the README),
and as GitHub Actions annotations and step outputs. It is also the state a
stopped run keeps in its workspace, so ``--continue`` can pick it up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "forkkit.sync-upstream/1"

#: status -> exit code of ``tools/sync-upstream``; errors use the codes in
#: ``forkkit.cli.EXIT_CODES`` (1 to 6) and 130 when interrupted.
EXIT_UP_TO_DATE = 0
EXIT_UPDATED = 10
EXIT_NEEDS_HUMAN = 11
EXIT_CODES = {
    "up-to-date": EXIT_UP_TO_DATE,
    "updated": EXIT_UPDATED,
    "conflict": EXIT_NEEDS_HUMAN,
    "guard-failed": EXIT_NEEDS_HUMAN,
}

#: The classes a patch ends in; see the README for each one's evidence.
CLASSES = (
    "applied",
    "applied-3way",
    "resolved",
    "dropped-upstream",
    "conflict",
    "unchanged",
)


@dataclass
class Commit:
    """An upstream commit, as evidence."""

    id: str
    subject: str
    author: str


@dataclass
class Evidence:
    """Why a patch got its class at one release."""

    release: str
    cls: str
    detail: str
    commits: list[Commit] = field(default_factory=list)


@dataclass
class PatchRecord:
    """One patch of the series and what happened to it."""

    file: str
    subject: str
    upstream_status: str
    cls: str = "unchanged"
    evidence: list[Evidence] = field(default_factory=list)
    series: str = "unchanged"

    def settle(
        self, release: str, cls: str, detail: str, commits: list[Commit]
    ) -> None:
        """Record the outcome at *release*; the strongest outcome so far wins."""
        self.evidence.append(Evidence(release, cls, detail, commits))
        if _RANK[cls] >= _RANK.get(self.cls, 0):
            self.cls = cls


_RANK = {
    "unchanged": 0,
    "applied": 1,
    "applied-3way": 2,
    "resolved": 3,
    "dropped-upstream": 4,
    "conflict": 5,
}


@dataclass
class HunkReport:
    """One hunk of a conflicting patch, located in the new base."""

    file: str
    hunk: int
    header: str
    patch_line: int
    new_base_lines: list[int] | None
    conflict_marker_lines: list[int]
    upstream_commits: list[Commit]
    upstream_range: str
    missing_file: bool = False


@dataclass
class ConflictReport:
    """The patch that stopped the run, and where a person must look."""

    patch: str
    subject: str
    old_base: str
    new_base: str
    hunks: list[HunkReport]
    unresolved_files: list[str]
    workspace: str
    next_steps: str


@dataclass
class GuardReport:
    """The upstream tests that guard one patch, run on the new tree."""

    patch: str
    tests: list[str]
    passed: bool
    output: str = ""


@dataclass
class Base:
    version: str
    hash: str | None


@dataclass
class SyncReport:
    """Everything one run of sync-upstream did; rendered and kept as state."""

    fork: str
    source: str
    status: str
    old_base: Base
    new_base: Base | None
    target: str
    steps: list[str]
    patches: list[PatchRecord]
    conflict: ConflictReport | None = None
    guards: list[GuardReport] = field(default_factory=list)
    series_changes: dict[str, list[str]] = field(default_factory=dict)
    release: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def record(self, file: str) -> PatchRecord:
        return next(p for p in self.patches if p.file == file)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data = {"schema": SCHEMA, **data, "exit_code": self.exit_code}
        for patch in data["patches"]:
            patch["class"] = patch.pop("cls")
            for item in patch["evidence"]:
                item["class"] = item.pop("cls")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncReport:
        def commits(items: list[dict[str, Any]]) -> list[Commit]:
            return [Commit(**c) for c in items]

        patches = [
            PatchRecord(
                file=p["file"],
                subject=p["subject"],
                upstream_status=p["upstream_status"],
                cls=p["class"],
                evidence=[
                    Evidence(
                        e["release"], e["class"], e["detail"], commits(e["commits"])
                    )
                    for e in p["evidence"]
                ],
                series=p["series"],
            )
            for p in data["patches"]
        ]
        conflict = None
        if c := data.get("conflict"):
            hunks = [
                HunkReport(**{**h, "upstream_commits": commits(h["upstream_commits"])})
                for h in c["hunks"]
            ]
            conflict = ConflictReport(**{**c, "hunks": hunks})
        new_base = data.get("new_base")
        return cls(
            fork=data["fork"],
            source=data["source"],
            status=data["status"],
            old_base=Base(**data["old_base"]),
            new_base=Base(**new_base) if new_base else None,
            target=data["target"],
            steps=list(data["steps"]),
            patches=patches,
            conflict=conflict,
            guards=[GuardReport(**g) for g in data.get("guards", [])],
            series_changes=dict(data.get("series_changes", {})),
            release=data.get("release"),
        )


def to_json_text(report: SyncReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n"


_HEADLINE = {
    "up-to-date": "is up to date",
    "updated": "was carried",
    "conflict": "stopped at a conflict",
    "guard-failed": "was carried, but guarding tests failed",
}


def to_markdown(report: SyncReport, series_dir: str) -> str:
    """The report as Markdown: a pull-request body or a step summary."""
    new = report.new_base.version if report.new_base else report.target
    lines = [f"# sync-upstream: {report.fork} {_HEADLINE[report.status]}", ""]
    if report.status == "up-to-date":
        lines.append(
            f"The base {report.old_base.version} is the newest upstream release "
            f"({report.source}); nothing to carry."
        )
    else:
        route = " → ".join([report.old_base.version, *report.steps])
        lines.append(f"Base {report.old_base.version} → {new} ({report.source}).")
        lines.append(f"Route: {route}.")
    lines += ["", "| patch | class | evidence |", "|---|---|---|"]
    for patch in report.patches:
        detail = "<br>".join(_evidence_line(e) for e in patch.evidence) or "-"
        lines.append(f"| `{patch.file}` | {patch.cls} | {_cell(detail)} |")
    if not report.patches:
        lines.append("| (the series is empty) | | |")

    dropped = [p for p in report.patches if p.cls == "dropped-upstream"]
    if dropped and report.status != "conflict":
        lines += ["", "## Dropped from the series", ""]
        for patch in dropped:
            lines.append(f"- `{patch.file}`: {patch.evidence[-1].detail}")
    if report.conflict:
        lines += ["", *_conflict_markdown(report.conflict, series_dir)]
    if report.guards:
        lines += ["", "## Guarding upstream tests", ""]
        for guard in report.guards:
            mark = "passed" if guard.passed else "**failed**"
            lines.append(f"- `{guard.patch}`: {mark}: " + ", ".join(guard.tests))
    changes = {k: v for k, v in report.series_changes.items() if v}
    if changes:
        lines += ["", "## Series files", ""]
        for kind, names in changes.items():
            lines.append(f"- {kind}: " + ", ".join(f"`{n}`" for n in names))
    if report.release:
        lines += ["", f"Release: {report.release}"]
    return "\n".join(lines) + "\n"


def _conflict_markdown(conflict: ConflictReport, series_dir: str) -> list[str]:
    lines = [
        f"## Conflict: `{conflict.patch}`",
        "",
        f"{conflict.subject} does not apply on {conflict.new_base} "
        f"(it applied on {conflict.old_base}).",
        "",
    ]
    for hunk in conflict.hunks:
        where = f"`{hunk.file}`"
        if hunk.new_base_lines:
            first, last = hunk.new_base_lines
            where += f" lines {first}-{last} of the new base"
        if hunk.missing_file:
            where = f"`{hunk.file}` is not in the new base"
        lines.append(
            f"- hunk #{hunk.hunk} `{hunk.header}` "
            f"({series_dir}/{conflict.patch} line {hunk.patch_line}): {where}"
        )
        if hunk.conflict_marker_lines:
            shown = ", ".join(str(n) for n in hunk.conflict_marker_lines)
            lines.append(f"  - conflict markers in the workspace at line {shown}")
        for commit in hunk.upstream_commits:
            lines.append(
                f"  - moved by upstream commit `{commit.id[:12]}` "
                f"{_cell(commit.subject)} ({_cell(commit.author)})"
            )
        if not hunk.upstream_commits:
            lines.append(
                f"  - changed upstream in the release range {hunk.upstream_range}"
            )
    lines += ["", conflict.next_steps]
    return lines


def _evidence_line(item: Evidence) -> str:
    text = f"{item.release}: {item.cls}: {item.detail}"
    commits = ", ".join(f"`{c.id[:12]}` {c.subject} ({c.author})" for c in item.commits)
    return f"{text} [{commits}]" if commits else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def github_annotations(report: SyncReport, series_dir: str) -> list[str]:
    """GitHub Actions ``::error`` lines for a conflict or failed guard."""
    found = []
    if conflict := report.conflict:
        for hunk in conflict.hunks:
            lines = hunk.new_base_lines
            where = (
                f" (lines {lines[0]}-{lines[1]} in {conflict.new_base})"
                if lines
                else ""
            )
            by = ", ".join(f"{c.id[:12]} {c.subject}" for c in hunk.upstream_commits)
            message = (
                f"{hunk.file} hunk #{hunk.hunk} does not apply on "
                f"{conflict.new_base}{where}; "
                + (f"moved by {by}" if by else f"changed in {hunk.upstream_range}")
            )
            found.append(
                f"::error file={series_dir}/{conflict.patch},line={hunk.patch_line},"
                f"title=sync-upstream conflict::{_escape(message)}"
            )
    for guard in report.guards:
        if not guard.passed:
            found.append(
                f"::error file={series_dir}/{guard.patch},line=1,"
                f"title=guarding test failed::{_escape(', '.join(guard.tests))}"
            )
    return found


def outputs(report: SyncReport, paths: dict[str, str]) -> dict[str, str]:
    """The step outputs set in ``$GITHUB_OUTPUT``."""
    dropped = [p.file for p in report.patches if p.cls == "dropped-upstream"]
    return {
        "status": report.status,
        "exit-code": str(report.exit_code),
        "old-base": report.old_base.version,
        "new-base": report.new_base.version if report.new_base else "",
        "target": report.target,
        "conflict-patch": report.conflict.patch if report.conflict else "",
        "dropped": " ".join(dropped),
        **paths,
    }


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
