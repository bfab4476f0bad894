"""A release: the base plus the series, built, checked, published and pinned.

``release`` is the whole of ``tools/release-fork``. It works in a scratch
workspace and in temporary folders; the project changes only at the end, in
one journaled step (``Transaction``): the local index's new files and pages
and the three pin files. A run killed at any point leaves the previous
release and pin as they were; the next run first rolls a half-applied
journal forward, then continues normally. A lock file makes a second run on
the same fork stop with a clear message instead of interleaving.

Publishing the same inputs again changes nothing: the inputs key (base hash,
patch contents, names, build recipe) of every release is in its provenance,
so a release already on the index is recognised without building.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from forkkit import build, checks, guards, publish
from forkkit.build import Artifacts, Inputs, PatchRecord, ReleaseSettings
from forkkit.errors import (
    IndexConflict,
    PinMismatch,
    ReleaseError,
    ReleaseInProgress,
)
from forkkit.fork import Base, Fork
from forkkit.gitenv import ISOLATED_ENV
from forkkit.pin import Pin, PinFiles
from forkkit.project import Project
from forkkit.publish import IndexFile, Target
from forkkit.series import Patch, parse_patch
from forkkit.workspace import BASE_REF, Workspace, load_series

log = logging.getLogger(__name__)

RELEASE_TAG = "refs/tags/release/{version}"
_RELEASE_IDENTITY = {
    "GIT_AUTHOR_NAME": "forkkit release",
    "GIT_AUTHOR_EMAIL": "release@localhost.invalid",
    "GIT_COMMITTER_NAME": "forkkit release",
    "GIT_COMMITTER_EMAIL": "release@localhost.invalid",
}


@dataclass(frozen=True)
class Options:
    """What ``tools/release-fork`` was asked to do."""

    target: Target | None = None
    dry_run: bool = False
    pinned: bool = False


@dataclass
class Outcome:
    """What a release run did.

    ``status`` is ``released`` (built and published), ``unchanged`` (the index
    already had it and the pin named it), ``pinned`` (the index had it, the
    pin now names it), ``checked`` (``--dry-run``: built and checked only) or
    ``unpinned`` (``--pinned`` with no pin yet: nothing to rebuild).
    """

    status: str
    fork: str
    distribution: str
    version: str
    index: str
    inputs: str
    files: dict[str, str] = field(default_factory=dict)
    uploaded: list[str] = field(default_factory=list)
    folder: Path | None = None
    steps: list[tuple[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "fork": self.fork,
            "distribution": self.distribution,
            "version": self.version,
            "index": self.index,
            "inputs": self.inputs,
            "files": dict(sorted(self.files.items())),
            "uploaded": self.uploaded,
            "folder": str(self.folder) if self.folder else None,
            "steps": {name: round(seconds, 3) for name, seconds in self.steps},
        }


class _Steps:
    """One line per step on stderr, with its duration."""

    def __init__(self, outcome_steps: list[tuple[str, float]]) -> None:
        self.done = outcome_steps

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self.done.append((name, seconds))
        log.info("release: %-8s %5.1fs  %s", name, seconds, what)


def release(project: Project, fork: Fork, options: Options) -> Outcome:
    """Build, check, publish and pin a release of *fork* (see the module doc)."""
    shown = project.shown(fork.path)
    settings = build.release_settings(fork, shown)
    state = project.root / ".workspace" / ".release" / fork.name
    with _locked(state, fork.name):
        Transaction.recover(state)
        return _release(project, fork, settings, options, state)


def _release(
    project: Project,
    fork: Fork,
    settings: ReleaseSettings,
    options: Options,
    state: Path,
) -> Outcome:
    timings: list[tuple[str, float]] = []
    step = _Steps(timings)
    pins = PinFiles(
        project.root,
        project.root / settings.pyproject,
        project.root / settings.pin,
    )
    pin = pins.read()
    target = options.target or publish.local_target(project.root / settings.index)

    if options.pinned and pin is None:
        log.info(
            "%s: no pin yet, so there is nothing to rebuild",
            project.shown(pins.record),
        )
        return Outcome("unpinned", fork.name, fork.distribution, "", "", "")

    with step("inputs", "base, series and recipe"):
        if options.pinned:
            assert pin is not None
            build_fork, inputs, patches = _pinned_inputs(
                project, fork, settings, pin, state / "pinned-series", pins.record
            )
        else:
            build_fork = fork
            _, patches = load_series(project, fork)
            inputs = _inputs(fork, settings, patches)

    outcome = Outcome(
        status="released",
        fork=fork.name,
        distribution=fork.distribution,
        version="",
        index=target.shown(),
        inputs=inputs.key,
        steps=timings,
    )

    with step("index", f"what {target.shown()} holds"):
        on_index = publish.list_files(target, fork.distribution)
        found = _already_released(target, on_index, inputs, settings, pin, options)
    if found is not None:
        version, files = found
        outcome.version, outcome.files = version, files
        same_pin = (
            pin is not None
            and pin.version == version
            and pin.files == files
            and _written(pins.render(pin, settings.extras))
        )
        if same_pin or options.dry_run or options.pinned:
            outcome.status = "unchanged"
            log.info(
                "nothing to do: %s %s on %s was built from these inputs%s",
                fork.distribution,
                version,
                target.shown(),
                " and is pinned" if same_pin else "",
            )
            return outcome
        with step("pin", f"{fork.distribution}=={version}"):
            record = _pin_for(fork, version, files, on_index, target, settings)
            transaction = Transaction(state)
            for path, data in pins.render(record, settings.extras).items():
                transaction.put(path, data)
            transaction.commit()
        outcome.status = "pinned"
        return outcome

    outcome.version = version = (
        pin.version if options.pinned and pin else _next_version(fork, on_index, pin)
    )
    with tempfile.TemporaryDirectory(prefix="forkkit-release-") as tmp:
        work = Path(tmp)
        # A workspace of its own, kept between runs so that the base is
        # imported once; the user's workspace may hold work in progress.
        scratch = Workspace(project, build_fork, state / "workspace")
        with step("apply", f"{len(patches)} patch(es) on {fork.base.version}"):
            scratch.apply(
                patches,
                force=True,
                three_way=False,
                objects_from=project.workspace_dir(fork),
            )
        with step("source", f"rename to {fork.distribution}, version {version}"):
            trees, epoch = _release_trees(
                scratch, inputs, settings, fork, version, work
            )
        tree = trees[0]
        guards = _guard_ids(build_fork, patches, project.shown(fork.path))
        # While the wheel is checked (installed, then imported beside the
        # guard tests), another thread waits for the sdist (built beside the
        # wheel when the recipe says so), normalises it (seconds of gzip on
        # one core) and checks both files. Leaving the block on an error
        # stops an sdist build still running.
        with (
            ThreadPoolExecutor(max_workers=2) as pool,
            build.Build(trees, work / "dist", epoch, inputs.recipe) as building,
        ):
            what = "wheel, the sdist beside it" if building.together else "sdist, wheel"
            with step("build", what):
                wheel = building.wheel()
            files_checked = pool.submit(
                _finish_and_check, building, fork, settings, version, epoch
            )
            with step("check", "install the wheel"):
                venv = _install(wheel, fork, settings, version, work)
            with step("gate", f"import check and {len(guards)} guard test(s)"):
                imported = pool.submit(
                    checks.check_import,
                    venv,
                    wheel,
                    work,
                    distribution=fork.distribution,
                    version=version,
                    package=settings.package,
                    upstream_project=fork.upstream.project,
                )
                if guards:
                    checks.run_guards(venv, tree, work, guards)
                imported.result()
            with step("files", "sdist normalised; twine check, metadata, modules"):
                artifacts = files_checked.result()
        outcome.files = artifacts.hashes()
        if options.pinned and pin is not None and outcome.files != pin.files:
            raise PinMismatch(
                f"the rebuilt {fork.distribution} {version} does not have the "
                "pinned hashes:\n"
                + "\n".join(
                    f"  {name}: pinned {pin.files.get(name, '(none)')}, built {digest}"
                    for name, digest in sorted(outcome.files.items())
                )
                + "\nthe recorded inputs no longer build the same bytes (another "
                "build backend or recipe?); refusing to publish it"
            )
        outcome.folder = _keep(artifacts, project.root / "dist" / fork.name)
        if options.dry_run:
            outcome.status = "checked"
            return outcome

        with step("publish", f"to {target.shown()}"):
            transaction = Transaction(state)
            if target.folder is None:
                outcome.uploaded = publish.upload(
                    target, artifacts.files, fork.distribution
                )
            else:
                outcome.uploaded = _stage_local(
                    transaction, target.folder, artifacts, fork.distribution
                )
        with step("pin", f"{fork.distribution}=={version}"):
            record = Pin(
                fork.distribution,
                version,
                outcome.files,
                json.loads(
                    (tree / settings.package / build.PROVENANCE_FILE).read_text()
                ),
            )
            if not options.pinned:
                for path, data in pins.render(record, settings.extras).items():
                    transaction.put(path, data)
            transaction.commit()
            scratch.git("update-ref", RELEASE_TAG.format(version=version), "HEAD")
    return outcome


# Inputs.


def _inputs(
    fork: Fork,
    settings: ReleaseSettings,
    patches: list[tuple[Path, Patch]],
    recipe: dict[str, Any] | None = None,
) -> Inputs:
    records = tuple(_record(patch) for _, patch in patches)
    up = fork.upstream
    upstream: dict[str, str | None] = {
        "source": up.source,
        "project": up.project,
        "index_url": up.index_url if up.source == "index" else None,
        "git_url": up.git_url,
        "tag": up.tag_for(fork.base.version) if up.source == "git" else None,
    }
    return Inputs(
        fork=fork.name,
        distribution=fork.distribution,
        package=settings.package,
        upstream=upstream,
        base_version=fork.base.version,
        base_sha256=fork.base.sha256,
        patches=records,
        recipe=dict(recipe or build.RECIPE),
    )


def _record(patch: Patch) -> PatchRecord:
    data = patch.text.encode()
    return PatchRecord(
        file=patch.file,
        subject=patch.subject,
        upstream_status=str(patch.status),
        sha256=patch.sha256,
        blob=build.git_blob_id(data),
    )


def _pinned_inputs(
    project: Project,
    fork: Fork,
    settings: ReleaseSettings,
    pin: Pin,
    folder: Path,
    record_file: Path,
) -> tuple[Fork, Inputs, list[tuple[Path, Patch]]]:
    """The inputs recorded in the pin, with the patches as they were then.

    A patch whose file changed since is read from the project's git history
    by the blob id the pin recorded; the recipe is the one it was built with.
    """
    record = pin.provenance
    number = build.recipe_number(record.get("recipe"))
    if number is None:
        raise PinMismatch(
            f"{project.shown(record_file)}: the release was built with the recipe "
            f"{json.dumps(record.get('recipe'))}, which this toolchain does not "
            f"know (it knows recipes {', '.join(map(str, build.RECIPES))}); "
            "rebuild it with the toolchain that made it, or make a new release"
        )
    base = record["base"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    patches = []
    for entry in record["patches"]:
        current = fork.series_dir / entry["file"]
        data = current.read_bytes() if current.is_file() else b""
        if build.git_blob_id(data) != entry["blob"]:
            data = _git_blob(project.root, entry["blob"], entry["file"])
        path = folder / entry["file"]
        path.write_bytes(data)
        patches.append((path, parse_patch(data.decode(), entry["file"], entry["file"])))
    # Guards declared for patches added since the pin belong to the next
    # release; the rebuild runs those of the patches it was made from.
    recorded = {entry["file"] for entry in record["patches"]}
    pinned_fork = dataclasses.replace(
        fork,
        base=Base(version=base["version"], sha256=base.get("sha256")),
        series_dir=folder,
        guards={name: tests for name, tests in fork.guards.items() if name in recorded},
    )
    inputs = _inputs(pinned_fork, settings, patches, build.RECIPES[number])
    if inputs.key != record.get("inputs"):
        raise PinMismatch(
            f"{project.shown(fork.path)}: the pinned release's recorded inputs "
            f"({record.get('inputs')}) differ from what they rebuild to "
            f"({inputs.key}); the pin record was edited by hand or the fork's "
            "names changed since"
        )
    return pinned_fork, inputs, patches


def _git_blob(root: Path, blob: str, name: str) -> bytes:
    result = subprocess.run(
        ["git", "-C", str(root), "cat-file", "blob", blob],
        capture_output=True,
        env={**os.environ, **ISOLATED_ENV},
        check=False,
    )
    if result.returncode != 0:
        raise ReleaseError(
            f"the pin records patch {name} as git blob {blob}, which is neither in "
            "the series folder nor in this repository's history; fetch the "
            "history (git fetch --unshallow) or make a new release"
        )
    return result.stdout


# The index.


def _already_released(
    target: Target,
    on_index: list[IndexFile],
    inputs: Inputs,
    settings: ReleaseSettings,
    pin: Pin | None,
    options: Options,
) -> tuple[str, dict[str, str]] | None:
    """The version and file hashes of a release with these inputs, if any."""
    by_version: dict[str, list[IndexFile]] = {}
    for file in on_index:
        by_version.setdefault(str(file.version), []).append(file)

    if pin is not None and pin.inputs == inputs.key:
        there = by_version.get(pin.version, [])
        hashes = {f.filename: publish.file_hash(target, f) for f in there}
        if hashes and hashes == pin.files:
            return pin.version, hashes
        if options.pinned:
            return None  # missing or incomplete: rebuild it
    if options.pinned:
        return None

    pattern = re.compile(re.escape(str(Version(inputs.base_version))) + r"\.post\d+")
    for version in sorted(by_version, key=Version, reverse=True):
        if not pattern.fullmatch(version):
            continue
        sdists = [f for f in by_version[version] if f.filename.endswith(".tar.gz")]
        if not sdists:
            continue
        record = publish.provenance_of(target, sdists[0], settings.package)
        if record and record.get("inputs") == inputs.key:
            files = {
                f.filename: publish.file_hash(target, f) for f in by_version[version]
            }
            return version, files
    return None


def _written(files: dict[Path, bytes]) -> bool:
    """Whether every file already has exactly this content."""
    return all(p.is_file() and p.read_bytes() == data for p, data in files.items())


def _next_version(fork: Fork, on_index: list[IndexFile], pin: Pin | None) -> str:
    """``<base>.post<N>``, N one more than the highest of this base.

    The pin counts too: on a fresh clone the local index is empty, and a new
    build must not reuse the pinned version's number.
    """
    base = Version(fork.base.version)
    seen = [f.version for f in on_index]
    if pin is not None:
        seen.append(Version(pin.version))
    posts = [
        v.post
        for v in seen
        if v.post is not None and Version(v.base_version) == base and v.dev is None
    ]
    return f"{base}.post{max(posts, default=0) + 1}"


def _pin_for(
    fork: Fork,
    version: str,
    files: dict[str, str],
    on_index: list[IndexFile],
    target: Target,
    settings: ReleaseSettings,
) -> Pin:
    sdist = next(
        f
        for f in on_index
        if str(f.version) == version and f.filename.endswith(".tar.gz")
    )
    record = publish.provenance_of(target, sdist, settings.package) or {}
    return Pin(fork.distribution, version, files, record)


# Building and checking.


def _release_trees(
    scratch: Workspace,
    inputs: Inputs,
    settings: ReleaseSettings,
    fork: Fork,
    version: str,
    work: Path,
) -> tuple[list[Path], int]:
    """Commit the renamed, re-versioned tree; return its exports and epoch.

    As many exports as the recipe builds from, made at once from one archive.
    """
    epoch = int(scratch.git("log", "-1", "--format=%ct", "HEAD"))
    base_commit = scratch.rev(BASE_REF) or ""
    provenance = inputs.provenance(version, base_commit, epoch)
    build.prepare_tree(scratch.path, settings, fork.distribution, version, provenance)

    stamp = f"@{epoch} +0000"
    dates = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    scratch.git("add", "-A")
    scratch.git(
        "commit",
        "-q",
        "--no-verify",
        "-m",
        f"Release {fork.distribution} {version}\n\ninputs: {inputs.key}\n",
        env={**_RELEASE_IDENTITY, **dates},
    )

    archive = work / "src.tar"
    scratch.git(
        "-c", "tar.umask=0022", "archive", "--format=tar", "-o", str(archive), "HEAD"
    )
    count = build.trees_needed(inputs.recipe)
    trees = [work / ("src" if n == 0 else f"src-{n + 1}") for n in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        for done in [pool.submit(_extract, archive, tree) for tree in trees]:
            done.result()
    archive.unlink()
    return trees, epoch


def _extract(archive: Path, folder: Path) -> None:
    folder.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def _finish_and_check(
    building: build.Build,
    fork: Fork,
    settings: ReleaseSettings,
    version: str,
    epoch: int,
) -> Artifacts:
    artifacts = building.artifacts()
    build.finish(artifacts, epoch)
    checks.twine_check(artifacts)
    checks.check_files(artifacts, fork.distribution, version, settings.package)
    return artifacts


def _install(
    wheel: Path,
    fork: Fork,
    settings: ReleaseSettings,
    version: str,
    work: Path,
) -> Path:
    requirements = checks.requirements_of(wheel, settings.extras)
    if fork.guards:
        requirements += list(settings.test_requirements)
    deps = checks.dependency_env(
        sorted(set(requirements)), settings.dependencies_index_url
    )
    return checks.install_wheel(
        wheel, work, distribution=fork.distribution, version=version, deps=deps
    )


def _guard_ids(fork: Fork, patches: list[tuple[Path, Patch]], shown: str) -> list[str]:
    declared = guards.declared(fork, [patch for _, patch in patches], shown)
    return [node for tests in declared.values() for node in tests]


def _keep(artifacts: Artifacts, folder: Path) -> Path:
    """Copy the built files and SHA256SUMS to ``dist/<fork>/`` for people."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in [*artifacts.files, artifacts.folder / build.SUMS_FILE]:
        shutil.copy2(path, folder / path.name)
    return folder


def _stage_local(
    transaction: Transaction, folder: Path, artifacts: Artifacts, distribution: str
) -> list[str]:
    project_dir = folder / canonicalize_name(distribution)
    new = []
    for path in artifacts.files:
        existing = project_dir / path.name
        digest = build.sha256_file(path)
        if existing.is_file():
            there = build.sha256_file(existing)
            if there != digest:
                raise IndexConflict(
                    f"{existing} already exists with sha256 {there}, but this "
                    f"build's is {digest}; an index never replaces a file (remove "
                    "it by hand if it is a leftover, or release the next version)"
                )
            continue
        transaction.put_file(existing, path)
        new.append(path)
    for page, data in publish.local_pages(folder, distribution, new).items():
        transaction.put(page, data)
    return [p.name for p in new]


# Locking and the journal.


@contextmanager
def _locked(state: Path, fork: str) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    path = state.parent / f"{fork}.lock"
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ReleaseInProgress(
                f"another tools/release-fork run on {fork} is in progress (pid "
                f"{holder}, lock {path}); wait for it to finish, then run again"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


class Transaction:
    """Files that change together: staged first, then moved by a journal.

    The journal is written atomically once every staged file is complete;
    from then on the change is decided and ``recover`` finishes it after a
    crash. Before that point nothing in the project has changed.
    """

    JOURNAL = "journal.json"

    def __init__(self, state: Path) -> None:
        self.state = state
        self.stage = state / f"stage-{os.getpid()}-{time.monotonic_ns()}"
        self.moves: list[tuple[Path, Path]] = []

    def put(self, target: Path, data: bytes) -> None:
        staged = self._next()
        staged.write_bytes(data)
        self.moves.append((staged, target))

    def put_file(self, target: Path, source: Path) -> None:
        staged = self._next()
        shutil.copyfile(source, staged)
        self.moves.append((staged, target))

    def _next(self) -> Path:
        self.stage.mkdir(parents=True, exist_ok=True)
        return self.stage / f"{len(self.moves):04d}"

    def commit(self) -> None:
        if not self.moves:
            return
        for staged, _ in self.moves:
            _fsync(staged)
        journal = self.state / self.JOURNAL
        partial = self.state / (self.JOURNAL + ".part")
        partial.write_text(
            json.dumps([[str(s), str(t)] for s, t in self.moves], indent=1)
        )
        _fsync(partial)
        os.replace(partial, journal)
        self._apply(self.moves)
        journal.unlink()
        shutil.rmtree(self.stage, ignore_errors=True)

    @staticmethod
    def _apply(moves: list[tuple[Path, Path]]) -> None:
        # Moving a staged file is its last use: a repeated move finds none.
        for source, destination in moves:
            if source.is_file():
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(source, 0o644)
                os.replace(source, destination)

    @classmethod
    def recover(cls, state: Path) -> None:
        """Finish a journaled change; drop staging that never reached one."""
        journal = state / cls.JOURNAL
        if journal.is_file():
            moves = json.loads(journal.read_text())
            log.info("finishing the change an interrupted release had decided on")
            cls._apply([(Path(s), Path(t)) for s, t in moves])
            journal.unlink()
        (state / (cls.JOURNAL + ".part")).unlink(missing_ok=True)
        for leftover in state.glob("stage-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


__all__ = ["Options", "Outcome", "Transaction", "release"]
