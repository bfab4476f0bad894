"""Carrying a fork's series onto newer upstream releases.

A run works in its own workspace (``.workspace/<fork>-sync``): it imports the
releases it passes through, applies the series to each one with ``git am
--3way`` (from the second release on, a release that takes every patch
cleanly is carried with ``git rebase``, which costs far less) and classifies
every patch with evidence. Nothing under ``forks/``
or ``patches/`` changes until the run has carried the series all the way and
the guarding tests passed; then the refreshed series, the recorded conflict
resolutions and the new base are written together.

A conflict stops the run with the workspace left at the failing patch and the
run's state saved in the workspace, so that ``resume`` finishes it once a
person has resolved the files. Resolutions are recorded with git rerere and
kept with the series in ``patches/<fork>/rerere/``, so a later run (or
another person) meets the same conflict already resolved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from packaging.version import InvalidVersion, Version

from forkkit import discover
from forkkit import fork as fork_module
from forkkit.errors import ForkError, WorkspaceError
from forkkit.fork import Fork
from forkkit.gitenv import COMMITTER, ISOLATED_ENV, run_status
from forkkit.project import Project
from forkkit.report import (
    Base,
    Commit,
    ConflictReport,
    GuardReport,
    HunkReport,
    PatchRecord,
    SyncReport,
)
from forkkit.series import FailedHunk, Patch, failing_hunks, parse_patch
from forkkit.workspace import (
    BASE_REF,
    FORMAT_PATCH,
    SERIES_BRANCH,
    Workspace,
    load_series,
)

log = logging.getLogger(__name__)

STATE_FILE = "forkkit-sync.json"
RERERE_DIR = "rerere"
_HEX = re.compile(r"\b[0-9a-f]{7,40}\b")
_PULL = re.compile(r"/(?:pull|pulls|merge_requests|issues)/(\d+)")
_MAIL_START = re.compile(r"^From [0-9a-f]{40} Mon Sep 17 00:00:00 2001$", re.M)
_FIELD = "\x1f"
_LOG_FORMAT = f"--format=%H{_FIELD}%s{_FIELD}%an <%ae>"


class ReleaseForkNotAvailable(ForkError):
    """``--release`` was asked for but ``tools/release-fork`` is not here."""


@dataclass(frozen=True)
class Options:
    """What a run was asked to do."""

    to: str | None = None
    step: bool = False
    pre: bool = False
    guards: bool = True
    release: bool = False


@dataclass
class _Carried:
    """A patch on its way through the releases: its series file and text."""

    file: str
    text: str
    commit: str | None = None

    @property
    def patch(self) -> Patch:
        return parse_patch(self.text, self.file, self.file)


@dataclass
class _State:
    """What a stopped run needs to finish; saved in the workspace."""

    report: SyncReport
    options: Options
    step: int
    carried: list[_Carried]
    queue: list[str]
    stopped_at: int
    digest: str
    stage: str = "am"
    hashes: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "report": self.report.to_json(),
            "options": self.options.__dict__,
            "step": self.step,
            "carried": [c.__dict__ for c in self.carried],
            "queue": self.queue,
            "stopped_at": self.stopped_at,
            "digest": self.digest,
            "stage": self.stage,
            "hashes": self.hashes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _State:
        return cls(
            report=SyncReport.from_json(data["report"]),
            options=Options(**data["options"]),
            step=data["step"],
            carried=[_Carried(**c) for c in data["carried"]],
            queue=list(data["queue"]),
            stopped_at=data["stopped_at"],
            digest=data["digest"],
            stage=data["stage"],
            hashes=dict(data["hashes"]),
        )


class Sync:
    """One fork's sync: start a run, or continue or abort a stopped one."""

    def __init__(self, project: Project, fork: Fork) -> None:
        self.project = project
        self.fork = fork
        self.workspace = Workspace(
            project, fork, project.root / ".workspace" / f"{fork.name}-sync"
        )
        self.series_shown = project.shown(fork.series_dir)
        self._commits: dict[str, str] = {}

    # The three entry points.

    def start(self, options: Options) -> SyncReport:
        """Carry the series to the target release; see the module docstring."""
        if options.release:
            self.release_command()
        self._refuse_dirty_tree()
        if self.stopped() is not None:
            raise WorkspaceError(
                f"{self.project.shown(self.workspace.path)}: a sync of "
                f"{self.fork.name} stopped at a conflict; resolve it and run "
                "'tools/sync-upstream --continue', or '--abort' to drop it"
            )

        plan = discover.plan(
            self.fork, to=options.to, step=options.step, pre=options.pre
        )
        carried = self._read_series()
        report = SyncReport(
            fork=self.fork.name,
            source=self._source(),
            status="up-to-date",
            old_base=Base(self.fork.base.version, self.fork.base.sha256),
            new_base=None,
            target=plan.target,
            steps=list(plan.steps),
            patches=[
                PatchRecord(c.file, c.patch.subject, str(c.patch.status))
                for c in carried
            ],
        )
        if plan.up_to_date:
            for record in report.patches:
                record.settle(
                    plan.base,
                    "unchanged",
                    "the base is the target: nothing to carry",
                    [],
                )
            log.info(
                "%s: the base %s is the newest upstream release; nothing to do",
                self.fork.name,
                plan.base,
            )
            return report

        log.info(
            "%s: carrying %d patch(es) from %s to %s (%s)",
            self.fork.name,
            len(carried),
            plan.base,
            plan.target,
            " -> ".join(plan.steps),
        )
        self._prepare_workspace(plan)
        state = _State(
            report=report,
            options=options,
            step=0,
            carried=carried,
            queue=[],
            stopped_at=-1,
            digest=self._digest(),
        )
        return self._run(state, resuming=False)

    def resume(self) -> SyncReport:
        """Finish a stopped run once the conflict is resolved in the workspace."""
        state = self.stopped()
        if state is None:
            raise WorkspaceError(
                f"{self.project.shown(self.workspace.path)}: no stopped sync of "
                f"{self.fork.name} to continue; run tools/sync-upstream first"
            )
        self._refuse_dirty_tree()
        if state.digest != self._digest():
            raise WorkspaceError(
                f"{self.project.shown(self.fork.path)} or {self.series_shown} "
                "changed since the sync stopped; run 'tools/sync-upstream --abort' "
                "and start again"
            )
        if state.stage == "guards":
            return self._finish(state)
        if not self.workspace.am_in_progress:
            raise WorkspaceError(
                f"{self.project.shown(self.workspace.path)}: the stopped patch is "
                "no longer being applied (was 'git am' run by hand?); run "
                "'tools/sync-upstream --abort' and start again, the resolution "
                "stays recorded"
            )
        unresolved = self._unresolved()
        if unresolved:
            raise WorkspaceError(
                f"{self.project.shown(self.workspace.path)}: still unresolved: "
                + ", ".join(unresolved)
                + "; edit them, 'git add' them, then run --continue again"
            )
        return self._run(state, resuming=True)

    def abort(self) -> None:
        """Forget a stopped run; forks/ and patches/ were never touched."""
        path = self._state_path()
        if self.workspace.exists:
            self.workspace.discard()
        if path.exists():
            path.unlink()
            log.info("%s: the stopped sync is dropped", self.fork.name)

    def stopped(self) -> _State | None:
        path = self._state_path()
        if not path.is_file():
            return None
        return _State.from_json(json.loads(path.read_text(encoding="utf-8")))

    def release_command(self) -> Path:
        """``tools/release-fork``, or ``ReleaseForkNotAvailable``."""
        command = self.project.root / "tools" / "release-fork"
        if not os.access(command, os.X_OK):
            raise ReleaseForkNotAvailable(
                "--release hands over to tools/release-fork, which is not in "
                f"{self.project.root}; run without --release, and release later"
            )
        return command

    # Carrying, release by release.

    def _run(self, state: _State, *, resuming: bool) -> SyncReport:
        report = state.report
        while state.step < len(report.steps):
            if resuming:
                stopped = self._continue_am(state)
                resuming = False
            else:
                stopped = self._carry_step(state)
            if stopped:
                return report
            state.step += 1
        return self._finish(state)

    def _carry_step(self, state: _State) -> bool:
        """Apply the carried patches on the step's release; True when stopped."""
        report = state.report
        old, new = self._step_bases(state)
        ws = self.workspace
        new_commit, old_commit = self._commit_of(new, state), self._commit_of(old)
        log.info("%s -> %s: %d patch(es)", old, new, len(state.carried))

        upstream, ours = self._patch_ids(old_commit, new_commit, state.carried)
        queue = []
        for carried, patch_id in zip(state.carried, ours, strict=True):
            record = report.record(carried.file)
            if patch_id and patch_id in upstream:
                commit = upstream[patch_id]
                record.settle(
                    new,
                    "dropped-upstream",
                    f"upstream commit {commit.id[:12]} has the same patch-id "
                    f"({patch_id[:12]})",
                    [commit],
                )
                continue
            if found := self._reference_in(carried.patch, old_commit, new_commit, new):
                detail, commits = found
                record.settle(new, "dropped-upstream", detail, commits)
                continue
            queue.append(carried)

        complete = len(queue) == len(state.carried)
        state.queue = [c.file for c in queue]
        state.carried = queue
        if queue and self._rebase_cleanly(state, old_commit, new_commit, complete):
            return False

        ws.git("checkout", "--quiet", "--force", "-B", SERIES_BRANCH, new_commit)
        mbox = Path(ws.repo.git_dir) / "forkkit-carry.mbox"
        mbox.write_text("".join(_as_mail(c.text) for c in queue), encoding="utf-8")
        if not queue:
            return False
        status, output = self._git_merged(
            "am", "--3way", "--keep", "--committer-date-is-author-date", str(mbox)
        )
        return self._after_am(state, status, output, start=0)

    def _rebase_cleanly(
        self, state: _State, old_commit: str, new_commit: str, complete: bool
    ) -> bool:
        """Carry a step that goes cleanly with git rebase; False to use git am.

        From the second release on, the patches are commits on the previous
        release, and rebasing them costs a fraction of what ``git am`` costs
        (it writes a handful of files per patch, and this disk is slow at
        creating files). Whether a patch went on exactly is then decided the
        way ``git apply`` does: every hunk's lines are found in the file it
        was applied to. A rebase that stops, or leaves an empty commit, is
        undone; ``git am`` then classifies the step and reports a conflict.
        """
        queue = state.carried
        if state.step == 0 or not all(c.commit for c in queue):
            return False
        ws = self.workspace
        # With nothing dropped (*complete*), the commits since the old base are
        # the queue: a plain rebase. Otherwise an interactive one whose todo
        # leaves the dropped ones out.
        picks = [c.commit for c in queue]
        options = ["--reapply-cherry-picks"]
        env: dict[str, str] = {}
        if not complete:
            todo = Path(ws.repo.git_dir) / "forkkit-todo"
            todo.write_text("".join(f"pick {c}\n" for c in picks))
            options = ["--interactive"]
            env = {"GIT_SEQUENCE_EDITOR": f"cp {shlex.quote(str(todo))}"}
        status, _ = self._git_merged(
            "-c",
            "rerere.enabled=false",
            "rebase",
            *options,
            "--empty=keep",
            "--committer-date-is-author-date",
            "--onto",
            new_commit,
            old_commit,
            env=env,
        )
        if status != 0:
            self._git_merged("rebase", "--abort")
            return False

        size = len(queue)
        queries = [f"HEAD~{size}"]
        for number, carried in enumerate(queue):
            parent, commit = f"HEAD~{size - number}", f"HEAD~{size - number - 1}"
            queries.append(commit)
            for diff in carried.patch.files:
                for path in {diff.old_path, diff.new_path} - {None}:
                    queries += [f"{parent}:{path}", f"{commit}:{path}"]
        found = dict(zip(queries, self._cat_file(queries), strict=True))
        if found[f"HEAD~{size}"][0] != new_commit:
            return False

        release = state.report.steps[state.step]
        outcomes = []
        for number, carried in enumerate(queue):
            parent, commit = f"HEAD~{size - number}", f"HEAD~{size - number - 1}"
            patch = carried.patch
            paths = {p for d in patch.files for p in (d.old_path, d.new_path) if p}
            if all(
                found[f"{parent}:{p}"][0] == found[f"{commit}:{p}"][0] for p in paths
            ):
                return False  # became empty: git am says so with evidence

            def read(path: str, parent: str = parent) -> str | None:
                data = found.get(f"{parent}:{path}", (None, None))[1]
                return None if data is None else data.decode("utf-8", "replace")

            exact = not failing_hunks(patch, read)
            outcomes.append(exact)

        for carried, exact in zip(queue, outcomes, strict=True):
            record = state.report.record(carried.file)
            if exact:
                record.settle(release, "applied", f"applied exactly on {release}", [])
            else:
                record.settle(
                    release,
                    "applied-3way",
                    f"applied on {release} by a 3-way merge; its change is kept "
                    "as it was",
                    [],
                )
        self._collect_commits(state)
        return True

    def _cat_file(self, queries: list[str]) -> list[tuple[str | None, bytes | None]]:
        """Object id and content of each ``git cat-file --batch`` query."""
        result = subprocess.run(
            ["git", "cat-file", "--batch"],
            input="".join(f"{q}\n" for q in queries).encode(),
            cwd=self.workspace.path,
            env=self._env(),
            capture_output=True,
            check=False,
        )
        out, at = result.stdout, 0
        answers: list[tuple[str | None, bytes | None]] = []
        for _ in queries:
            end = out.index(b"\n", at)
            header = out[at:end].decode().split()
            at = end + 1
            if len(header) != 3:  # "<query> missing" or "ambiguous"
                answers.append((None, None))
                continue
            size = int(header[2])
            answers.append((header[0], out[at : at + size]))
            at += size + 1
        return answers

    def _continue_am(self, state: _State) -> bool:
        self._git_merged("rerere")
        ids = self._rerere_ids()
        status, output = self._git_merged("am", "--continue")
        if status != 0 and "No changes" in output and not self._unresolved():
            # The resolution made the patch empty: upstream already has it.
            record = state.report.record(state.queue[state.stopped_at])
            record.cls = "applied"
            record.settle(
                state.report.steps[state.step],
                "dropped-upstream",
                "resolved to no change: upstream already makes its change",
                [],
            )
            status, output = self._git_merged("am", "--skip")
            return self._after_am(state, status, output, start=state.stopped_at + 1)
        kept = ", ".join(f"{self.series_shown}/{RERERE_DIR}/{i}" for i in ids)
        detail = "conflict resolved by hand in the workspace; " + (
            f"the resolution is recorded in {kept}"
            if ids
            else "git rerere recorded nothing to reuse"
        )
        return self._after_am(
            state, status, output, start=state.stopped_at, resolved=detail
        )

    def _after_am(
        self,
        state: _State,
        status: int,
        output: str,
        *,
        start: int,
        resolved: str | None = None,
    ) -> bool:
        """Classify what one ``git am`` call did; True when it stopped.

        The patch at *start* is the first one this call applied; when
        *resolved* is given, it is a conflict just resolved with that detail.
        """
        report = state.report
        release = report.steps[state.step]
        stopped = status != 0 and self.workspace.am_in_progress
        chunks = _am_chunks(output)
        if stopped:
            chunks = chunks[:-1]
        for number, chunk in enumerate(chunks):
            file = state.queue[start + number]
            record = report.record(file)
            if number == 0 and resolved is not None:
                record.cls = "applied"
                record.settle(release, "resolved", resolved, [])
            elif "No changes -- Patch already applied" in chunk:
                record.settle(
                    release,
                    "dropped-upstream",
                    f"became empty on {release}: upstream already makes its change",
                    self._file_commits(state, file),
                )
            elif "Falling back to patching base and 3-way merge" in chunk:
                record.settle(
                    release,
                    "applied-3way",
                    f"applied on {release} by a 3-way merge; its change is kept "
                    "as it was",
                    [],
                )
            else:
                record.settle(release, "applied", f"applied exactly on {release}", [])

        if not stopped:
            if status != 0:
                raise WorkspaceError(
                    f"{self.project.shown(self.workspace.path)}: git am failed "
                    f"on {release}: {(output.strip().splitlines() or ['?'])[-1]}"
                )
            self._collect_commits(state)
            return False

        next_file = Path(self.workspace.repo.git_dir) / "rebase-apply" / "next"
        position = int(next_file.read_text().strip()) - 1
        state.stopped_at = position
        file = state.queue[position]
        reused = re.findall(
            r"^(?:Staged|Resolved) '(.+)' using previous resolution", output, re.M
        )
        if reused and not self._unresolved():
            # git rerere applied a resolution recorded earlier: reuse it.
            log.info(
                "%s: reusing the recorded resolution of %s", file, ", ".join(reused)
            )
            status, output = self._git_merged("am", "--continue")
            return self._after_am(
                state,
                status,
                output,
                start=position,
                resolved=(
                    "conflict resolved by the recorded resolution "
                    f"{self.series_shown}/{RERERE_DIR}/ ({', '.join(reused)})"
                ),
            )

        self._stop_at_conflict(state, file)
        return True

    def _collect_commits(self, state: _State) -> None:
        """Take the step's new commits as the patches to carry further."""
        report = state.report
        base = self._commit_of(report.steps[state.step])
        release = report.steps[state.step]
        kept = [
            f
            for f in state.queue
            if report.record(f).evidence
            and report.record(f).evidence[-1].release == release
            and report.record(f).evidence[-1].cls != "dropped-upstream"
        ]
        # Real commit ids in the "From" lines: the next release rebases them.
        options = [o for o in FORMAT_PATCH if o != "--zero-commit"]
        text = self.workspace.git(*options, f"{base}..HEAD")
        mails = _split_mbox(text)
        if len(mails) != len(kept):
            raise WorkspaceError(
                f"{self.project.shown(self.workspace.path)}: {len(mails)} commit(s) "
                f"on {release} but {len(kept)} patch(es) applied; the workspace "
                "was changed during the run, run --abort and start again"
            )
        ids = [mail.split(" ", 2)[1] for mail in mails]
        carried = [_Carried(f, t, c) for f, t, c in zip(kept, mails, ids, strict=True)]
        for before, after in zip(
            [c for c in state.carried if c.file in kept], carried, strict=True
        ):
            record = report.record(before.file)
            last = record.evidence[-1]
            if last.cls == "applied-3way" and _changes(before.text) != _changes(
                after.text
            ):
                last.detail = (
                    f"applied on {release} by a 3-way merge that changed its "
                    "content (part of it is upstream now); review the refreshed "
                    "patch"
                )
        state.carried = carried
        state.queue = []

    # Stopping at a conflict.

    def _stop_at_conflict(self, state: _State, file: str) -> None:
        report = state.report
        old, new = self._step_bases(state)
        old_commit, new_commit = self._commit_of(old), self._commit_of(new)
        self.workspace.git("update-ref", BASE_REF, new_commit)
        carried = next(c for c in state.carried if c.file == file)
        patch = carried.patch

        def read(path: str) -> str | None:
            status, out, _ = run_status(self.workspace.repo, "show", f"HEAD:{path}")
            return out if status == 0 else None

        failed = failing_hunks(patch, read)
        markers = self._marker_lines()
        if not failed:
            failed = [
                FailedHunk(diff.path, hunk)
                for diff in patch.files
                for hunk in diff.hunks
                if diff.path in markers
            ]
        original = self._original_text(file)
        hunks = []
        for item in failed:
            lines = self._new_base_lines(item, old_commit, new_commit)
            commits = self._moved_by(item.path, lines, old_commit, new_commit)
            hunks.append(
                HunkReport(
                    file=item.path,
                    hunk=item.hunk.number,
                    header=item.hunk.header,
                    patch_line=_hunk_line(original, item.path, item.hunk.number),
                    new_base_lines=list(lines) if lines else None,
                    conflict_marker_lines=markers.get(item.path, []),
                    upstream_commits=commits,
                    upstream_range=f"{old}..{new}",
                    missing_file=item.missing_file,
                )
            )
        shown = self.project.shown(self.workspace.path)
        record = report.record(file)
        by = sorted({c.id[:12] for h in hunks for c in h.upstream_commits})
        record.settle(
            new,
            "conflict",
            f"does not apply on {new}"
            + (f"; moved by upstream {', '.join(by)}" if by else f" ({old}..{new})"),
            [c for h in hunks for c in h.upstream_commits],
        )
        report.status = "conflict"
        report.conflict = ConflictReport(
            patch=file,
            subject=patch.subject,
            old_base=old,
            new_base=new,
            hunks=hunks,
            unresolved_files=self._unresolved(),
            workspace=shown,
            next_steps=(
                f"Resolve the files in {shown} (edit, then 'git add'), and run "
                f"'tools/sync-upstream {self.fork.name} --continue'; do not run "
                "'git am --continue' yourself. The resolution is recorded and kept "
                f"in {self.series_shown}/{RERERE_DIR}/. "
                f"'tools/sync-upstream {self.fork.name} --abort' drops the run."
            ),
        )
        self._save(state)

    def _new_base_lines(
        self, failed: FailedHunk, old_commit: str, new_commit: str
    ) -> tuple[int, int] | None:
        path = failed.path
        if failed.missing_file:
            return None
        status, old_text, _ = run_status(
            self.workspace.repo, "show", f"{old_commit}:{path}"
        )
        hunk = failed.hunk
        start = hunk.old_start
        if status == 0:
            start = _locate(old_text.splitlines(), list(hunk.before), hunk.old_start)
        end = start + max(len(hunk.before), 1) - 1
        status, diff, _ = run_status(
            self.workspace.repo,
            "diff",
            "-U0",
            "--no-color",
            old_commit,
            new_commit,
            "--",
            path,
        )
        return map_range(_diff_hunks(diff), start, end)

    def _moved_by(
        self,
        path: str,
        lines: tuple[int, int] | None,
        old_commit: str,
        new_commit: str,
    ) -> list[Commit]:
        if self.fork.upstream.source != "git":
            return []
        ws = self.workspace
        if lines is not None:
            status, text, _ = run_status(ws.repo, "show", f"{new_commit}:{path}")
            size = len(text.splitlines()) if status == 0 else 0
            if size:
                first = min(max(lines[0] - 1, 1), size)
                last = min(max(lines[1] + 1, first), size)
                status, out, _ = run_status(
                    ws.repo,
                    "log",
                    "-s",
                    _LOG_FORMAT,
                    f"-L{first},{last}:{path}",
                    f"{old_commit}..{new_commit}",
                )
                if status == 0 and (found := _commits(out)):
                    return found
        out = ws.git("log", _LOG_FORMAT, f"{old_commit}..{new_commit}", "--", path)
        return _commits(out)

    def _marker_lines(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for path in self._unresolved():
            file = self.workspace.path / path
            if file.is_file():
                text = file.read_text(encoding="utf-8", errors="replace").splitlines()
                found[path] = [
                    n for n, line in enumerate(text, 1) if line.startswith("<<<<<<< ")
                ]
        return found

    # Evidence that upstream has a patch.

    def _patch_ids(
        self, old: str, new: str, carried: list[_Carried]
    ) -> tuple[dict[str, Commit], list[str | None]]:
        """Upstream commits between *old* and *new* by patch-id, and ours.

        One ``git log`` and one ``git patch-id`` per release: the upstream
        commits come first, then the carried patches. Only upstream commits
        that touch a file of the series can have a patch's patch-id, so the
        log is limited to those (with their full diff); when there are none,
        patch-id does not run at all.
        """
        if self.fork.upstream.source != "git" or old == new or not carried:
            return {}, [None] * len(carried)
        paths = sorted(
            {
                path
                for c in carried
                for diff in c.patch.files
                for path in (diff.old_path, diff.new_path)
                if path is not None
            }
        )
        # patch-id reads "commit <id>" lines (the default log header confuses
        # it); the line after it, marked with \x1f, is the evidence to show.
        text = self.workspace.git(
            "log",
            "-p",
            "--full-diff",
            "--no-merges",
            "--no-color",
            f"--format=commit %H%n{_FIELD}%H{_FIELD}%s{_FIELD}%an <%ae>",
            f"{old}..{new}",
            "--",
            *paths,
        )
        if not text:
            return {}, [None] * len(carried)
        marked = [line[1:] for line in text.splitlines() if line.startswith(_FIELD)]
        commits = {c.id: c for c in _commits("\n".join(marked))}
        mails = "".join(_as_mail(c.text) for c in carried)
        ids = self._run_patch_id(text + "\n" + mails)
        ours = [
            pid for pid, cid in ids[len(ids) - len(carried) :] if cid not in commits
        ]
        if len(ours) != len(carried):
            ours = [(self._run_patch_id(c.text) or [("", "")])[0][0] for c in carried]
        upstream = {pid: commits[cid] for pid, cid in ids if cid in commits}
        return upstream, [pid or None for pid in ours]

    def _run_patch_id(self, text: str) -> list[tuple[str, str]]:
        result = subprocess.run(
            ["git", "patch-id", "--stable"],
            input=text.encode(),
            cwd=self.workspace.path,
            env=self._env(),
            capture_output=True,
            check=False,
        )
        pairs = []
        for line in result.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 2:
                pairs.append((parts[0], parts[1]))
        return pairs

    def _reference_in(
        self, patch: Patch, old: str, new: str, release: str
    ) -> tuple[str, list[Commit]] | None:
        """Evidence that the patch's Backport/Submitted reference is upstream."""
        kind, ref = patch.status.kind, patch.status.ref
        if kind not in ("Backport", "Submitted") or not ref:
            return None
        label = f"Upstream-Status: {kind} [{ref}]"
        if kind == "Backport":
            version = _as_version(ref)
            if version is not None:
                if version <= Version(release):
                    return f"{label}: the release {release} includes {version}", []
                return None
            for candidate in _HEX.findall(ref):
                if self._is_in(candidate, new):
                    commit = _commits(
                        self.workspace.git("log", "-1", _LOG_FORMAT, candidate)
                    )
                    return (
                        f"{label}: upstream commit {candidate[:12]} is in the "
                        f"new base {release}",
                        commit,
                    )
        number = _PULL.search(ref)
        needles = [ref] + (
            [f"(#{number.group(1)})", f"#{number.group(1)} "] if number else []
        )
        if self.fork.upstream.source == "git" and old != new:
            for needle in needles:
                out = self.workspace.git(
                    "log", _LOG_FORMAT, "-F", f"--grep={needle}", f"{old}..{new}"
                )
                if found := _commits(out):
                    return (
                        f"{label}: named by upstream commit {found[0].id[:12]} "
                        f"between the old and the new base",
                        found[:1],
                    )
        pattern = re.compile(
            re.escape(ref) + (rf"|#{number.group(1)}\b" if number else "")
        )
        if any(pattern.search(line) for line in self._changelog_added(old, new)):
            return f"{label}: the {release} changelog names it", []
        return None

    def _changelog_added(self, old: str, new: str) -> list[str]:
        status, diff, _ = run_status(
            self.workspace.repo,
            "diff",
            "-U0",
            "--no-color",
            old,
            new,
            "--",
            ":(glob,icase)CHANGELOG*",
            ":(glob,icase)CHANGES*",
            ":(glob,icase)HISTORY*",
        )
        if status != 0:
            return []
        return [
            line[1:]
            for line in diff.splitlines()
            if line.startswith("+") and not line.startswith("+++")
        ]

    def _is_in(self, commit: str, new: str) -> bool:
        status, _, _ = run_status(
            self.workspace.repo, "merge-base", "--is-ancestor", commit, new
        )
        return status == 0

    def _file_commits(self, state: _State, file: str) -> list[Commit]:
        """The upstream commits between the step's bases that touched its lines."""
        if self.fork.upstream.source != "git":
            return []
        old, new = self._step_bases(state)
        old_commit, new_commit = self._commit_of(old), self._commit_of(new)
        patch = next(c for c in state.carried if c.file == file).patch
        found: dict[str, Commit] = {}
        for diff in patch.files:
            if diff.old_path is None:
                continue
            for hunk in diff.hunks:
                item = FailedHunk(diff.old_path, hunk)
                lines = self._new_base_lines(item, old_commit, new_commit)
                for commit in self._moved_by(item.path, lines, old_commit, new_commit):
                    found.setdefault(commit.id, commit)
        return list(found.values())

    # Finishing: guards, export, publish.

    def _finish(self, state: _State) -> SyncReport:
        report = state.report
        new = report.steps[-1]
        self.workspace.import_release(new, state.hashes.get(new))
        self.workspace.git("update-ref", BASE_REF, self._commit_of(new))
        if state.options.guards and not self._run_guards(state):
            state.stage = "guards"
            report.status = "guard-failed"
            self._save(state)
            return report

        staged, removed = self._stage(state)
        fork_text = self._declaration(state, new)
        staged.append((self.fork.path, fork_text.encode()))
        _publish(staged, removed)
        self._state_path().unlink(missing_ok=True)
        report.status = "updated"
        report.new_base = Base(new, state.hashes.get(new))
        report.conflict = None
        log.info("%s: the series is carried to %s", self.fork.name, new)

        if state.options.release:
            report.release = self._release()
        return report

    def _run_guards(self, state: _State) -> bool:
        report = state.report
        in_series = {p.file for p in report.patches if p.cls != "dropped-upstream"}
        report.guards = []
        ok = True
        for patch, tests in self.fork.guards.items():
            if patch not in in_series or not tests:
                continue
            log.info("guarding %s: %s", patch, " ".join(tests))
            passed, output = self._pytest(tests)
            report.guards.append(GuardReport(patch, tests, passed, output[-2000:]))
            ok = ok and passed
        self.workspace.git("clean", "-q", "-ffdx")
        return ok

    def _pytest(self, tests: list[str]) -> tuple[bool, str]:
        tree = self.workspace.path
        config = next(
            (
                str(tree / name)
                for name in ("pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
                if (tree / name).is_file()
            ),
            os.devnull,
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--rootdir={tree}",
                "-c",
                config,
                *tests,
            ],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        return result.returncode == 0, result.stdout

    def _stage(self, state: _State) -> tuple[list[tuple[Path, bytes]], list[Path]]:
        """The series files and resolutions to write, and the files to delete."""
        report = state.report
        folder = self.fork.series_dir
        with tempfile.TemporaryDirectory(
            prefix=".sync-", dir=self.workspace.path.parent
        ) as tmp:
            copy = Path(tmp)
            for path in folder.iterdir():
                if path.is_file():
                    shutil.copy2(path, copy / path.name)
            result = self.workspace.export(copy)
            staged = [
                (folder / name, (copy / name).read_bytes()) for name in result.written
            ]
            if result.series_rewritten:
                staged.append((folder / "series", (copy / "series").read_bytes()))
        removed = [folder / name for name in result.removed]
        for record in report.patches:
            if record.file in result.written:
                record.series = "rewritten"
            elif record.file in result.kept:
                record.series = "kept (only its context moved)"
            elif record.file in result.removed:
                record.series = "removed"
        report.series_changes = {
            "rewritten": list(result.written),
            "kept": list(result.kept),
            "removed": list(result.removed),
            "resolutions": [],
        }
        resolutions = self._stage_resolutions()
        report.series_changes["resolutions"] = [
            self.project.shown(p) for p, _ in resolutions
        ]
        return staged + resolutions, removed

    def _stage_resolutions(self) -> list[tuple[Path, bytes]]:
        cache = Path(self.workspace.repo.git_dir) / "rr-cache"
        kept = self.fork.series_dir / RERERE_DIR
        staged = []
        for entry in sorted(cache.glob("*/postimage*")):
            for name in (entry.name, entry.name.replace("postimage", "preimage")):
                source = entry.parent / name
                target = kept / entry.parent.name / name
                data = source.read_bytes() if source.is_file() else None
                if data is not None and (
                    not target.is_file() or target.read_bytes() != data
                ):
                    staged.append((target, data))
        return staged

    def _declaration(self, state: _State, new: str) -> str:
        sha = state.hashes.get(new) if self.fork.upstream.source == "index" else None
        text = fork_module.set_base(self.fork, new, sha)
        dropped = [p.file for p in state.report.patches if p.cls == "dropped-upstream"]
        return _without_guards(text, dropped)

    def _release(self) -> str:
        command = self.release_command()
        log.info("handing over to %s %s", self.project.shown(command), self.fork.name)
        result = subprocess.run(
            [str(command), self.fork.name], cwd=self.project.root, check=False
        )
        if result.returncode != 0:
            raise ForkError(
                f"tools/release-fork {self.fork.name} failed with status "
                f"{result.returncode}; the series and base are already updated, "
                "run it again once fixed"
            )
        return f"tools/release-fork {self.fork.name}: done"

    # The workspace and the project.

    def _prepare_workspace(self, plan: discover.Plan) -> None:
        ws = self.workspace
        if ws.exists:
            ws.discard()
        if self.fork.upstream.source == "git":
            self._fetch_tags([self.fork.base.version, *plan.steps])
        main = self.project.workspace_dir(self.fork)
        ws.import_release(self.fork.base.version, self.fork.base.sha256, main)
        if self.fork.upstream.source == "git":
            versions = [self.fork.base.version, *plan.steps]
            refs = [f"refs/tags/upstream/{v}^{{commit}}" for v in versions]
            status, out, _ = run_status(ws.repo, "rev-parse", *refs)
            if status == 0 and len(out.split()) == len(versions):
                self._commits.update(zip(versions, out.split(), strict=True))
        cache = Path(ws.repo.git_dir) / "rr-cache"
        kept = self.fork.series_dir / RERERE_DIR
        if kept.is_dir():
            for entry in kept.iterdir():
                if entry.is_dir():
                    shutil.copytree(entry, cache / entry.name, dirs_exist_ok=True)

    def _fetch_tags(self, versions: list[str]) -> None:
        """Fetch every release tag in one go; imports then find them present."""
        up = self.fork.upstream
        assert up.git_url is not None
        missing = [
            v for v in versions if self.workspace.rev(f"refs/tags/upstream/{v}") is None
        ]
        if not missing:
            return
        specs = [f"+refs/tags/{up.tag_for(v)}:refs/tags/upstream/{v}" for v in missing]
        status, _, _ = run_status(
            self.workspace.repo, "fetch", "--quiet", "--no-tags", up.git_url, *specs
        )
        if status != 0:
            log.debug("fetching all tags at once failed; importing one by one")

    def _step_bases(self, state: _State) -> tuple[str, str]:
        steps = state.report.steps
        old = steps[state.step - 1] if state.step else state.report.old_base.version
        return old, steps[state.step]

    def _commit_of(self, version: str, state: _State | None = None) -> str:
        """The imported release's commit; with *state*, import it when missing."""
        if commit := self._commits.get(version):
            return commit
        commit = None
        if self.fork.upstream.source == "git":
            commit = self.workspace.rev(f"refs/tags/upstream/{version}^{{commit}}")
        if commit is None:
            release = self.workspace.import_release(version, None)
            commit = release.commit
            if state is not None:
                state.hashes[version] = release.sha256
        self._commits[version] = commit
        return commit

    def _read_series(self) -> list[_Carried]:
        _, patches = load_series(self.project, self.fork)
        return [_Carried(p.file, p.text) for _, p in patches]

    def _original_text(self, file: str) -> str:
        path = self.fork.series_dir / file
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def _source(self) -> str:
        up = self.fork.upstream
        if up.source == "git":
            return f"git {up.git_url}"
        return f"index {up.index_url} ({up.project})"

    def _refuse_dirty_tree(self) -> None:
        root = self.project.root
        result = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=root,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise WorkspaceError(
                f"{root}: not a git work tree; sync-upstream runs in a checkout of "
                "the project so that its changes can be reviewed"
            )
        if dirty := result.stdout.strip().splitlines():
            raise WorkspaceError(
                f"{root}: the work tree has uncommitted changes ({dirty[0].strip()}"
                + (f" and {len(dirty) - 1} more" if len(dirty) > 1 else "")
                + "); commit or stash them first"
            )

    def _digest(self) -> str:
        digest = hashlib.sha256(self.fork.path.read_bytes())
        folder = self.fork.series_dir
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode() + b"\0")
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def _state_path(self) -> Path:
        return self.workspace.path / ".git" / STATE_FILE

    def _save(self, state: _State) -> None:
        path = self._state_path()
        path.write_text(json.dumps(state.to_json(), indent=1), encoding="utf-8")

    def _unresolved(self) -> list[str]:
        out = self.workspace.git("diff", "--name-only", "--diff-filter=U")
        return sorted(set(out.splitlines()))

    def _rerere_ids(self) -> list[str]:
        path = Path(self.workspace.repo.git_dir) / "MERGE_RR"
        if not path.is_file():
            return []
        entries = path.read_text(encoding="utf-8", errors="replace").split("\0")
        return sorted({e.split("\t")[0].split(".")[0] for e in entries if "\t" in e})

    def _env(self) -> dict[str, str]:
        return {**os.environ, **ISOLATED_ENV, **COMMITTER}

    def _git_merged(
        self, *args: str, env: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Run git with stdout and stderr in one stream, in order."""
        # git am ends by spawning 'git maintenance run --auto', a third of its
        # time on a small series; a throw-away workspace needs no maintenance.
        result = subprocess.run(
            ["git", "-c", "maintenance.auto=false", *args],
            cwd=self.workspace.path,
            env={**self._env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        log.debug("git %s: %s\n%s", " ".join(args), result.returncode, result.stdout)
        return result.returncode, result.stdout


def map_range(
    hunks: list[tuple[int, int, int, int]], first: int, last: int
) -> tuple[int, int]:
    """Where lines *first*..*last* of the old tree are in the new tree.

    *hunks* are ``(old_start, old_count, new_start, new_count)`` of a
    ``diff -U0``. A line inside a changed region maps to that region.
    """

    def where(line: int, end: bool) -> int:
        delta = 0
        for old_start, old_count, new_start, new_count in hunks:
            old_end = old_start + old_count - 1 if old_count else old_start
            if old_count and old_start <= line <= old_end:
                if end:
                    return new_start + max(new_count, 1) - 1
                return new_start if new_count else new_start + 1
            if old_end < line or (not old_count and old_start < line):
                delta += new_count - old_count
                continue
            break
        return line + delta

    start = where(first, False)
    return start, max(start, where(last, True))


_DIFF_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.M)


def _diff_hunks(diff: str) -> list[tuple[int, int, int, int]]:
    return [
        (
            int(m.group(1)),
            int(m.group(2)) if m.group(2) is not None else 1,
            int(m.group(3)),
            int(m.group(4)) if m.group(4) is not None else 1,
        )
        for m in _DIFF_HUNK.finditer(diff)
    ]


def _locate(lines: list[str], needle: list[str], near: int) -> int:
    """The 1-based line where *needle* starts in *lines*, nearest to *near*."""
    if not needle:
        return near
    starts = [
        i + 1
        for i in range(len(lines) - len(needle) + 1)
        if lines[i : i + len(needle)] == needle
    ]
    return min(starts, key=lambda s: abs(s - near)) if starts else near


def _hunk_line(text: str, path: str, number: int) -> int:
    """The line of hunk *number* of *path* in a patch file (1 when unknown)."""
    current, count = None, 0
    for line_number, line in enumerate(text.splitlines(), 1):
        if line.startswith("diff --git "):
            current, count = line.split(" b/", 1)[-1], 0
        elif line.startswith("@@ ") and current == path:
            count += 1
            if count == number:
                return line_number
    return 1


def _am_chunks(output: str) -> list[str]:
    """``git am`` output split at each ``Applying:`` line."""
    parts = re.split(r"^(?=Applying: )", output, flags=re.M)
    return [p for p in parts if p.startswith("Applying: ")]


def _as_mail(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _split_mbox(text: str) -> list[str]:
    starts = [m.start() for m in _MAIL_START.finditer(text)]
    return [
        text[a:b].rstrip("\n") + "\n"
        for a, b in zip(starts, [*starts[1:], len(text)], strict=True)
    ]


def _changes(text: str) -> list[str]:
    """The lines a patch adds and removes, without context or positions."""
    return [
        line
        for line in text.split("\n---\n", 1)[-1].splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _commits(out: str) -> list[Commit]:
    found = []
    for line in out.splitlines():
        parts = line.split(_FIELD)
        if len(parts) == 3 and re.fullmatch(r"[0-9a-f]{40}", parts[0]):
            found.append(Commit(parts[0], parts[1], parts[2]))
    return found


def _as_version(ref: str) -> Version | None:
    text = ref.strip().removeprefix("v")
    if _HEX.fullmatch(text) and not text.isdigit():
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _without_guards(text: str, dropped: list[str]) -> str:
    if not dropped:
        return text
    document = tomlkit.parse(text)
    guards = document.get("guards")
    if guards is None:
        return text
    for name in dropped:
        if name in guards:
            del guards[name]
    return tomlkit.dumps(document)


def _publish(files: list[tuple[Path, bytes]], remove: list[Path]) -> None:
    """Write every file to a temporary name first, then move all into place.

    Unlike the export's writer, this one spans folders (forks/, the series,
    its recorded resolutions) and writes bytes: rerere images are upstream
    text in whatever encoding upstream uses.
    """
    temporary: list[tuple[Path, Path]] = []
    try:
        for target, data in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".sync-", dir=target.parent)
            with os.fdopen(handle, "wb") as out:
                out.write(data)
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


__all__ = ["Options", "ReleaseForkNotAvailable", "Sync", "map_range"]
