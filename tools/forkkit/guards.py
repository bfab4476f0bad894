"""Guard tests: proof that each patch's tests really guard it.

A fork declares, per patch, the upstream tests that must pass on its release
(``[guards]`` in ``forks/<name>.toml``); ``tools/release-fork`` runs them on
the installed wheel. A guard that also passes on plain upstream guards
nothing: the patch could be dropped or broken and the release gate would not
notice. ``prove`` runs each patch's guard tests twice, from the tests of the
patched tree: against the base's source (they must fail) and against the
source with the whole series applied (they must pass).

Both runs use the interpreter given (by default this one, whose environment
holds the pinned release's dependencies) with the source tree first on
``PYTHONPATH``, so the package under test is the tree's, not an installed one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from forkkit import checks
from forkkit.build import clean_environment
from forkkit.errors import DeclarationError
from forkkit.fork import Fork
from forkkit.project import Project
from forkkit.series import Patch
from forkkit.workspace import Workspace, load_series

log = logging.getLogger(__name__)

# pytest's exit statuses that the proof tells apart.
_OUTCOMES = {0: "passed", 1: "failed", 5: "no tests"}


@dataclass(frozen=True)
class GuardRun:
    """One pytest run of a patch's guard tests against one tree."""

    outcome: str  # passed, failed, no tests, or error (collection, usage)
    summary: str  # pytest's last line, e.g. "1 failed, 2 passed in 0.4s"
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "summary": self.summary,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class GuardProof:
    """What a patch's guard tests did on the base and on the patched tree."""

    patch: str
    tests: list[str]
    on_base: GuardRun | None
    on_series: GuardRun | None

    @property
    def problem(self) -> str | None:
        """Why this patch is not guarded, or None when it is."""
        if not self.tests:
            return f"{self.patch}: declares no guard tests"
        assert self.on_base is not None and self.on_series is not None
        if self.on_series.outcome != "passed":
            return (
                f"{self.patch}: its guard tests do not pass with the series "
                f"({self.on_series.outcome}: {self.on_series.summary})"
            )
        if self.on_base.outcome not in ("failed", "error"):
            return (
                f"{self.patch}: its guard tests {self.on_base.outcome} on the base "
                "too, so they guard nothing; add a test that fails without the patch"
            )
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "patch": self.patch,
            "tests": self.tests,
            "base": self.on_base.as_dict() if self.on_base else None,
            "series": self.on_series.as_dict() if self.on_series else None,
            "guarded": self.problem is None,
        }


def declared(fork: Fork, patches: list[Patch], shown: str) -> dict[str, list[str]]:
    """Each patch of the series with its guard tests, in series order.

    *shown* names the declaration in the error for a key that names no patch.
    """
    names = {patch.file for patch in patches}
    for name in fork.guards:
        if name not in names:
            raise DeclarationError(
                f"{shown}: key 'guards.{name}' names a patch that is not in the "
                "series; remove the key or add the patch"
            )
    return {patch.file: list(fork.guards.get(patch.file, [])) for patch in patches}


def prove(
    project: Project, fork: Fork, python: str = sys.executable
) -> list[GuardProof]:
    """Run every patch's guard tests on the base and on the patched tree."""
    _, series = load_series(project, fork)
    patches = [patch for _, patch in series]
    guards = declared(fork, patches, project.shown(fork.path))
    every_test = [node for tests in guards.values() for node in tests]

    # A workspace of its own: the user's may hold work in progress.
    scratch_dir = project.root / ".workspace" / ".guards" / fork.name
    scratch = Workspace(project, fork, scratch_dir)
    scratch.apply(
        series, force=True, three_way=False, objects_from=project.workspace_dir(fork)
    )
    base_commit = scratch.rev(f"refs/tags/upstream/{fork.base.version}^{{commit}}")
    assert base_commit is not None  # apply imported it

    proofs = []
    with tempfile.TemporaryDirectory(prefix="forkkit-guards-") as tmp:
        work = Path(tmp)
        test_roots = sorted({Path(node.split("::")[0]).parts[0] for node in every_test})
        base_tree = _export(scratch, base_commit, work / "base", test_roots)
        for patch, tests in guards.items():
            if not tests:
                proofs.append(GuardProof(patch, [], None, None))
                continue
            log.info("guards of %s: %d node id(s)", patch, len(tests))
            gate = work / f"gate-{len(proofs)}"
            checks.prepare_gate(scratch.path, gate, tests)
            proofs.append(
                GuardProof(
                    patch,
                    tests,
                    on_base=_pytest(python, gate, base_tree, tests),
                    on_series=_pytest(python, gate, scratch.path, tests),
                )
            )
    return proofs


def _export(
    workspace: Workspace, commit: str, into: Path, leave_out: list[str]
) -> Path:
    """Write *commit*'s tree to *into*, without the folders *leave_out*."""
    into.mkdir()
    command = ["git", "-C", str(workspace.path), "archive", "--format=tar", commit]
    command += ["--", ".", *(f":(exclude){name}" for name in leave_out)]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as archive:
        assert archive.stdout is not None
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(into, filter="data")
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {commit} failed in {workspace.path}")
    return into


def _pytest(python: str, gate: Path, tree: Path, tests: list[str]) -> GuardRun:
    started = time.monotonic()
    command = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-header"]
    result = subprocess.run(
        [*command, "-o", "addopts=", *tests],
        cwd=gate,
        env=clean_environment({"PYTHONPATH": str(tree)}),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else result.stderr.strip()[-200:]
    return GuardRun(
        _OUTCOMES.get(result.returncode, "error"),
        summary,
        time.monotonic() - started,
    )
