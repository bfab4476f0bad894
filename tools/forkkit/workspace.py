"""The workspace: a throw-away git repository per fork.

It holds every imported upstream release (tag ``upstream/<version>``; the
branch ``upstream`` points at the newest one) and the series applied on the
base as one commit per patch (branch ``series``, checked out for editing).
It is derived from ``forks/`` and ``patches/`` and can be rebuilt at any
time; two refs record where it stands:

``refs/forkkit/base``
    the commit the series branch was built on;
``refs/forkkit/exported``
    the series head as last applied or exported, so that commits made since
    are never thrown away by accident.

Commit ids depend on the inputs only: imports use a fixed identity and the
sdist's newest member time, patches keep their author and date, and the
committer is fixed with its date taken from the author date.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import git
from packaging.version import InvalidVersion, Version

from forkkit import archive, index
from forkkit.errors import (
    PatchDoesNotApply,
    SdistHashMismatch,
    SeriesError,
    UpstreamReleaseNotFound,
    UpstreamUnreachable,
    WorkspaceError,
)
from forkkit.fork import Fork
from forkkit.gitenv import (
    ISOLATED_ENV,
    GitFailed,
    init_repo,
    open_repo,
    redact,
    run,
    run_status,
)
from forkkit.project import Project
from forkkit.series import (
    Conflict,
    Patch,
    Series,
    content_key,
    failing_hunks,
    parse_patch,
    read_patch,
    read_series,
    slug,
)

log = logging.getLogger(__name__)

BASE_REF = "refs/forkkit/base"
EXPORTED_REF = "refs/forkkit/exported"
SERIES_BRANCH = "series"
UPSTREAM_BRANCH = "upstream"

#: Options that make ``git format-patch`` output depend on the commit only.
FORMAT_PATCH = (
    "format-patch",
    "--zero-commit",
    "--no-signature",
    "--no-stat",
    "--keep-subject",
    "--full-index",
    "--no-numbered",
    "--stdout",
)
_IMPORT_IDENTITY = {
    "GIT_AUTHOR_NAME": "upstream release",
    "GIT_AUTHOR_EMAIL": "upstream@localhost.invalid",
    "GIT_COMMITTER_NAME": "upstream release",
    "GIT_COMMITTER_EMAIL": "upstream@localhost.invalid",
}
_SHA_LINE = re.compile(r"^sha256: ([0-9a-f]{64})$", re.M)


@dataclass(frozen=True)
class ImportedRelease:
    """An upstream release present in the workspace."""

    version: str
    commit: str
    sha256: str | None


@dataclass(frozen=True)
class PatchOutcome:
    """How one patch went onto the tree: applied, applied-3way or empty."""

    file: str
    subject: str
    outcome: str
    commit: str


@dataclass
class ExportResult:
    """What ``export`` did to the series folder."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    series_rewritten: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed or self.series_rewritten)


class Workspace:
    """The workspace repository of one fork."""

    def __init__(self, project: Project, fork: Fork, path: Path | None = None):
        self.project = project
        self.fork = fork
        self.path = path or project.workspace_dir(fork)
        self._repo: git.Repo | None = None

    @property
    def exists(self) -> bool:
        return (self.path / ".git").is_dir()

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            self._repo = open_repo(self.path) if self.exists else init_repo(self.path)
        return self._repo

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return run(self.repo, *args, env=env).strip()

    def rev(self, ref: str) -> str | None:
        status, out, _ = run_status(self.repo, "rev-parse", "--verify", "-q", ref)
        return out.strip() if status == 0 else None

    # Importing upstream releases.

    def import_release(
        self, version: str, sha256: str | None = None, objects_from: Path | None = None
    ) -> ImportedRelease:
        """Make upstream *version* available as tag ``upstream/<version>``.

        From the package index, *sha256* is checked (None: the index's hash is
        trusted and returned for the caller to record). *objects_from* names
        another workspace to copy an identical import from, which saves time.
        """
        tag = f"refs/tags/upstream/{version}"
        commit = self.rev(tag + "^{commit}")
        if commit is None and objects_from is not None:
            commit = self._copy_import(objects_from, tag)
        if commit is None:
            if self.fork.upstream.source == "git":
                commit = self._import_git(version, tag)
            else:
                commit = self._import_sdist(version, sha256, tag)
        recorded = self._recorded_sha(commit)
        if sha256 and recorded and recorded != sha256:
            raise SdistHashMismatch(
                f"{self.project.shown(self.fork.path)}: base.sha256 is {sha256}, but "
                f"the workspace imported {version} from an sdist with sha256 "
                f"{recorded}; remove {self.project.shown(self.path)} to import again"
            )
        self._move_upstream_branch()
        return ImportedRelease(version, commit, recorded)

    def _copy_import(self, other: Path, tag: str) -> str | None:
        if not (other / ".git").is_dir() or other.resolve() == self.path.resolve():
            return None
        status, _, _ = run_status(self.repo, "fetch", "-q", str(other), f"{tag}:{tag}")
        return self.rev(tag + "^{commit}") if status == 0 else None

    def _import_sdist(self, version: str, sha256: str | None, tag: str) -> str:
        up = self.fork.upstream
        release = index.find_sdist(up.index_url, up.project, version)
        sdist = index.fetch_sdist(release, sha256)
        digest = sdist.parent.name
        log.info("importing %s %s from %s", up.project, version, sdist.name)

        message = (
            f"Import {up.project} {version} from its release sdist\n\n"
            f"{release.filename}\nsha256: {digest}\n"
        )
        commit = self._fast_import(archive.read_sdist(sdist), message)
        self.git("update-ref", tag, commit)
        return commit

    def _fast_import(self, members: Iterator[archive.Member], message: str) -> str:
        """Commit *members* as a root commit, without a work tree.

        git fast-import writes the blobs straight into a pack, which is many
        times faster than unpacking thousands of files to disk first. The
        commit's dates are the newest member's time, so ids are stable.
        """
        scratch = "refs/forkkit/importing"
        process = self.repo.git.execute(
            # No deltas: moto's 120 MB of sources import three times faster.
            [
                "git",
                *("-c", "pack.compression=1"),
                "fast-import",
                "--quiet",
                "--depth=0",
                "--date-format=raw",
                "--force",
            ],
            as_process=True,
            istream=subprocess.PIPE,
            env={**ISOLATED_ENV, **_IMPORT_IDENTITY},
        )
        proc = process.proc
        assert proc is not None and proc.stdin is not None
        stream = proc.stdin
        newest = 0
        entries: list[tuple[str, bool, int]] = []
        try:
            for mark, member in enumerate(members, 1):
                newest = max(newest, member.mtime)
                stream.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(member.data)))
                stream.write(member.data + b"\n")
                entries.append((member.path, member.executable, mark))
            stream.write(_commit_command(scratch, newest, message, entries))
            stream.close()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        status = proc.wait()
        if status != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise GitFailed(["fast-import"], status, "", err)
        commit = self.git("rev-parse", scratch)
        self.git("update-ref", "-d", scratch)
        return commit

    def _import_git(self, version: str, tag: str) -> str:
        up = self.fork.upstream
        assert up.git_url is not None
        remote_tag = up.tag_for(version)
        log.info("fetching %s tag %s", redact(up.git_url), remote_tag)
        status, out, err = run_status(
            self.repo,
            "fetch",
            "--quiet",
            "--no-tags",
            up.git_url,
            f"+refs/tags/{remote_tag}:{tag}",
        )
        if status != 0:
            detail = redact((err or out).strip())
            if "couldn't find remote ref" in detail:
                raise UpstreamReleaseNotFound(
                    f"{redact(up.git_url)} has no tag {remote_tag} (for version "
                    f"{version}); check base.version and upstream.tag-pattern"
                )
            raise UpstreamUnreachable(
                f"{redact(up.git_url)}: git fetch failed: "
                f"{detail.splitlines()[-1] if detail else status}; check "
                "upstream.git-url and the network"
            )
        commit = self.rev(tag + "^{commit}")
        assert commit is not None
        return commit

    def _recorded_sha(self, commit: str) -> str | None:
        match = _SHA_LINE.search(self.git("log", "-1", "--format=%B", commit))
        return match.group(1) if match else None

    def _move_upstream_branch(self) -> None:
        newest: tuple[Version, str] | None = None
        for line in self.git("tag", "--list", "upstream/*").splitlines():
            try:
                version = Version(line.removeprefix("upstream/"))
            except InvalidVersion:
                continue
            if newest is None or version > newest[0]:
                newest = (version, line)
        if newest is not None:
            commit = self.git("rev-parse", f"refs/tags/{newest[1]}^{{commit}}")
            self.git("update-ref", f"refs/heads/{UPSTREAM_BRANCH}", commit)

    # Applying the series.

    def guard(self) -> None:
        """Refuse when the workspace holds work that was never exported."""
        if not self.exists:
            return
        shown = self.project.shown(self.path)
        if self.am_in_progress:
            raise WorkspaceError(
                f"{shown}: a patch is being resolved there (git am in progress); "
                "finish it with 'git am --continue' and export, or pass --force "
                "to throw it away"
            )
        if run(self.repo, "status", "--porcelain").strip():
            raise WorkspaceError(
                f"{shown}: the work tree has uncommitted changes; commit them and "
                "export, or pass --force to throw them away"
            )
        head, exported = self.rev("HEAD"), self.rev(EXPORTED_REF)
        if head and exported and head != exported:
            unsaved = self.git("log", "--format=%h %s", f"{exported}..{head}")
            if unsaved or not self._is_ancestor(head, exported):
                first = unsaved.splitlines()[0] if unsaved else "a rewritten commit"
                raise WorkspaceError(
                    f"{shown}: the series branch has commits that were never "
                    f"exported (newest: {first}); run 'tools/patches export' "
                    "first, or pass --force to throw them away"
                )

    @property
    def am_in_progress(self) -> bool:
        return (Path(self.repo.git_dir) / "rebase-apply").exists()

    def _is_ancestor(self, a: str, b: str) -> bool:
        status, _, _ = run_status(self.repo, "merge-base", "--is-ancestor", a, b)
        return status == 0

    def apply(
        self,
        patches: list[tuple[Path, Patch]],
        *,
        force: bool = False,
        three_way: bool = True,
        objects_from: Path | None = None,
    ) -> list[PatchOutcome]:
        """Rebuild the series branch: the base plus one commit per patch.

        Stops with ``PatchDoesNotApply`` at the first patch that applies
        neither exactly nor (when *three_way*) by a 3-way merge, leaving the
        workspace at that patch for a person to resolve.
        """
        if force:
            self.discard()
        else:
            self.guard()
        base = self.import_release(
            self.fork.base.version, self.fork.base.sha256, objects_from
        ).commit

        self.git("checkout", "--quiet", "--force", "-B", SERIES_BRANCH, base)
        self.git("clean", "-q", "-ffdx")
        self.git("update-ref", BASE_REF, base)
        self.git("update-ref", EXPORTED_REF, base)

        outcomes = []
        for number, (path, patch) in enumerate(patches, 1):
            log.info("applying %d/%d %s", number, len(patches), patch.file)
            outcome = self.apply_one(path, patch, three_way=three_way)
            outcomes.append(outcome)
            self.git("update-ref", EXPORTED_REF, "HEAD")
        return outcomes

    def apply_one(self, path: Path, patch: Patch, *, three_way: bool) -> PatchOutcome:
        """Commit one patch on HEAD; raise ``PatchDoesNotApply`` on a conflict."""
        before = self.git("rev-parse", "HEAD")
        am = ("am", "--quiet", "--keep", "--committer-date-is-author-date")
        exact, _, _ = run_status(self.repo, "apply", "--check", str(path))
        if exact == 0:
            run(self.repo, *am, str(path))
            outcome = "applied"
        elif three_way:
            status, out, err = run_status(self.repo, *am, "--3way", str(path))
            if status != 0:
                self._raise_conflict(patch, before, out + err)
            outcome = "applied-3way"
        else:
            self._raise_conflict(patch, before, "")
        head = self.git("rev-parse", "HEAD")
        if head == before:
            outcome = "empty"
        return PatchOutcome(patch.file, patch.subject, outcome, head)

    def _raise_conflict(self, patch: Patch, before: str, output: str) -> None:
        if "Patch is empty" in output or "No changes" in output:
            run_status(self.repo, "am", "--skip")
            return

        def read(path: str) -> str | None:
            status, out, _ = run_status(self.repo, "show", f"{before}:{path}")
            return out if status == 0 else None

        conflict = Conflict(patch.file, patch.subject, failing_hunks(patch, read))
        conflict.conflict_lines = self._marker_lines()
        raise PatchDoesNotApply(conflict.describe(), conflict)

    def _marker_lines(self) -> dict[str, list[int]]:
        paths = self.git("diff", "--name-only", "--diff-filter=U").splitlines()
        found: dict[str, list[int]] = {}
        for path in paths:
            file = self.path / path
            if not file.is_file():
                continue
            text = file.read_text(encoding="utf-8", errors="replace").splitlines()
            found[path] = [
                i for i, line in enumerate(text, 1) if line.startswith("<<<<<<< ")
            ]
        return found

    def discard(self) -> None:
        """Throw away whatever is in progress or uncommitted in the workspace."""
        if not self.exists:
            return
        if self.am_in_progress:
            run_status(self.repo, "am", "--abort")
            shutil.rmtree(Path(self.repo.git_dir) / "rebase-apply", ignore_errors=True)
        if self.rev("HEAD"):
            self.git("reset", "--quiet", "--hard")
            self.git("clean", "-q", "-ffdx")

    # Exporting the series.

    def export(self, folder: Path | None = None) -> ExportResult:
        """Write the series branch back into the series folder.

        Only files whose content changed are written: an unchanged patch, or
        one whose context merely moved, keeps its bytes. Nothing is written
        unless every commit exports to a valid patch.
        """
        folder = folder or self.fork.series_dir
        shown = self.project.shown(folder)
        if not self.exists or self.rev(BASE_REF) is None:
            raise WorkspaceError(
                f"{self.project.shown(self.path)}: no workspace to export; run "
                f"'tools/patches apply {self.fork.name}' first"
            )
        if self.am_in_progress:
            raise WorkspaceError(
                f"{self.project.shown(self.path)}: a patch is still being resolved "
                "(git am in progress); finish it with 'git am --continue' first"
            )
        if run(self.repo, "status", "--porcelain", "--untracked-files=no").strip():
            raise WorkspaceError(
                f"{self.project.shown(self.path)}: the work tree has uncommitted "
                "changes; commit them (or 'git reset --hard') before exporting"
            )
        base = self.git("rev-parse", BASE_REF)
        if not self._is_ancestor(base, "HEAD"):
            raise WorkspaceError(
                f"{self.project.shown(self.path)}: HEAD is not built on the base "
                f"{base[:12]}; check out the series branch"
            )
        if self.git("rev-list", "--merges", f"{base}..HEAD"):
            raise WorkspaceError(
                f"{self.project.shown(self.path)}: the series has merge commits; "
                "a series is a straight line of commits"
            )

        old = read_series(folder, shown) if (folder / "series").is_file() else None
        old_names = old.names if old else []
        texts = self._format_patches(base, old_names, folder, shown)

        result = ExportResult()
        staged: list[tuple[Path, str]] = []
        for name, text in texts:
            target = folder / name
            previous = target.read_text(encoding="utf-8") if target.is_file() else None
            if previous == text:
                result.unchanged.append(name)
            elif previous is not None and content_key(previous) == content_key(text):
                result.kept.append(name)
            else:
                result.written.append(name)
                staged.append((target, text))
        new_names = [name for name, _ in texts]
        result.removed = [n for n in old_names if n not in new_names]
        if new_names != old_names or old is None:
            header = old.header if old else [f"# The patch series of {self.fork.name}."]
            staged.append((folder / "series", "\n".join([*header, *new_names]) + "\n"))
            result.series_rewritten = True

        _write_all(folder, staged, [folder / n for n in result.removed])
        self.git("update-ref", EXPORTED_REF, "HEAD")
        return result

    def _format_patches(
        self, base: str, old_names: list[str], folder: Path, shown: str
    ) -> list[tuple[str, str]]:
        by_subject: dict[str, list[str]] = {}
        for name in old_names:
            try:
                subject = read_patch(folder / name, f"{shown}/{name}").subject
            except SeriesError:
                continue
            by_subject.setdefault(subject, []).append(name)

        texts: list[tuple[str, str]] = []
        used: set[str] = set()
        commits = self.git("rev-list", "--reverse", f"{base}..HEAD").splitlines()
        for commit in commits:
            text = run(self.repo, *FORMAT_PATCH, "-1", commit)
            short = f"commit {commit[:12]}"
            patch = parse_patch(text, "", f"{short} ({self._subject(commit)})")
            names = [n for n in by_subject.get(patch.subject, []) if n not in used]
            name = names[0] if names else _unique(slug(patch.subject), used)
            used.add(name)
            texts.append((name, text))
        return texts

    def _subject(self, commit: str) -> str:
        return self.git("log", "-1", "--format=%s", commit)


def load_series(
    project: Project, fork: Fork
) -> tuple[Series, list[tuple[Path, Patch]]]:
    """The fork's series and its parsed patches; raises ``SeriesError``."""
    shown = project.shown(fork.series_dir)
    series = read_series(fork.series_dir, shown)
    patches = [
        (
            fork.series_dir / e.file,
            read_patch(fork.series_dir / e.file, f"{shown}/{e.file}"),
        )
        for e in series.entries
    ]
    return series, patches


def _commit_command(
    ref: str, stamp: int, message: str, entries: list[tuple[str, bool, int]]
) -> bytes:
    """The fast-import commit of *entries* (path, executable, blob mark)."""
    name = _IMPORT_IDENTITY["GIT_AUTHOR_NAME"]
    ident = f"{name} <{_IMPORT_IDENTITY['GIT_AUTHOR_EMAIL']}> {stamp} +0000"
    body = message.encode()
    lines = [
        f"commit {ref}".encode(),
        f"author {ident}".encode(),
        f"committer {ident}".encode(),
        b"data %d" % len(body),
        body,
        b"deleteall",
    ]
    for path, executable, mark in entries:
        mode = b"100755" if executable else b"100644"
        lines.append(b"M %s :%d %s" % (mode, mark, _quote(path)))
    return b"\n".join(lines) + b"\n\n"


def _quote(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted when it needs to be."""
    raw = path.encode()
    if not any(c in raw for c in b'"\\\n') and not raw.startswith(b" "):
        return raw
    escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
    return b'"' + escaped + b'"'


def _unique(name: str, used: set[str]) -> str:
    stem, number = name.removesuffix(".patch"), 2
    while name in used:
        name = f"{stem}-{number}.patch"
        number += 1
    return name


def write_atomically(path: Path, text: str) -> None:
    """Replace *path* with *text*: readers see the old file or the new one."""
    _write_all(path.parent, [(path, text)], [])


def _write_all(folder: Path, files: list[tuple[Path, str]], remove: list[Path]) -> None:
    """Write every file first to a temporary name, then move all into place."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary: list[tuple[Path, Path]] = []
    try:
        for target, text in files:
            handle, name = tempfile.mkstemp(prefix=".export-", dir=folder)
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            os.chmod(name, 0o644)
            temporary.append((Path(name), target))
    except BaseException:
        for path, _ in temporary:
            path.unlink(missing_ok=True)
        raise
    for path, target in temporary:
        os.replace(path, target)
    for path in remove:
        path.unlink(missing_ok=True)


__all__ = ["GitFailed", "Workspace", "load_series"]
