"""Benchmark: sync-upstream --step against a plain ``git rebase`` loop.

Builds, in a temporary folder, an upstream git repository with twenty releases
after 1.0 (each moves lines around the patched ones and changes others) and a
twelve-patch series written against 1.0. Then it carries the series to the
newest release twice, over the same releases: once with sync-upstream
(``--step``: every release, with classification, evidence, export and the
new base written), once with ``git rebase --onto`` from release to release.
Prints both times and the ratio; the target is at most 2x.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forkkit.project import Project
from forkkit.sync import Options, Sync
from tests.forkkit.upstreams import Upstream, git, make_patch, write_declaration

PATCHES = 12
LINES = 120


def module(n: int, release: int) -> str:
    """Module n at a release: every release adds a line at its top."""
    head = "".join(f"# changed in release {r}\n" for r in range(1, release + 1))
    body = "".join(f"value_{n}_{i} = {i}\n" for i in range(LINES))
    return head + body


def build(tmp: Path, releases: int) -> tuple[Upstream, Path]:
    up = Upstream(tmp / "upstream")
    files = {f"lib/mod_{n}.py": module(n, 0) for n in range(PATCHES)}
    up.commit({**files, "README.md": "lib\n"}, "Start")
    up.release("1.0", sdist=False)
    for r in range(1, releases + 1):
        touched = {f"lib/mod_{n}.py": module(n, r) for n in range(PATCHES)}
        up.commit(touched, f"Release {r} notes")
        up.commit({"README.md": f"lib {r}\n"}, f"Document release {r}")
        up.release(f"1.{r}", sdist=False)

    root = tmp / "project"
    write_declaration(root, up, version="1.0", source="git", name="bench")
    tree = tmp / "tree"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", "1.0"], cwd=up.repo, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    names = []
    for n in range(PATCHES):
        path = f"lib/mod_{n}.py"
        text = module(n, 0).replace(f"value_{n}_60 = 60", f"value_{n}_60 = -60")
        mail = make_patch(tmp / "work", tree, {path: text}, f"Negate value {n}")
        name = f"{n + 1:04d}-negate-{n}.patch"
        (root / "patches" / "bench" / name).write_text(mail)
        names.append(name)
    (root / "patches" / "bench" / "series").write_text("\n".join(names) + "\n")
    (root / ".gitignore").write_text("/.workspace/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench project")
    return up, root


def prepare_clone(tmp: Path, up: Upstream, root: Path) -> Path:
    """The baseline's repository: upstream with the series as commits on 1.0."""
    clone = tmp / "clone"
    git(tmp, "clone", "-q", str(up.repo), str(clone))
    git(clone, "checkout", "-q", "-b", "series", "1.0")
    series = root / "patches" / "bench"
    names = (series / "series").read_text().split()
    git(clone, "am", "-q", *[str(series / n) for n in names])
    git(clone, "tag", "series-on-1.0")
    return clone


class Clock:
    """Wall time, and CPU time of this process and the processes it waited for.

    On a shared machine under load, wall time swings with the neighbours; CPU
    time (user + system, git processes included) is what the work costs.
    """

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = _cpu()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, _cpu() - self.cpu


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rebase_loop(clone: Path, releases: int) -> tuple[float, float]:
    """The baseline: the series as commits, rebased from release to release."""
    git(clone, "checkout", "-q", "-B", "series", "series-on-1.0")
    clock = Clock()
    previous = "1.0"
    for r in range(1, releases + 1):
        git(clone, "rebase", "-q", "--onto", f"1.{r}", previous, "series")
        previous = f"1.{r}"
    elapsed = clock.stop()
    count = git(clone, "rev-list", "--count", f"{previous}..series").strip()
    assert count == str(PATCHES), count
    return elapsed


def sync_step(pristine: Path, root: Path) -> tuple[float, float]:
    """sync-upstream --step in a fresh copy of the project (it updates it)."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root, symlinks=True)
    project = Project(root)
    clock = Clock()
    report = Sync(project, project.fork("bench")).start(
        Options(step=True, guards=False)
    )
    elapsed = clock.stop()
    assert report.status == "updated", report.status
    assert [p.cls for p in report.patches] == ["applied"] * PATCHES
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate both this many times and keep each one's best time, "
        "which is what a shared, busy machine can measure fairly",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ours: list[tuple[float, float]] = []
    baseline: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as name:
        tmp = Path(name)
        up, pristine = build(tmp, args.releases)
        clone = prepare_clone(tmp, up, pristine)
        print(
            f"{PATCHES} patches across {args.releases} releases, "
            f"{args.rounds} round(s)",
            file=sys.stderr,
        )
        for _ in range(args.rounds):
            ours.append(sync_step(pristine, tmp / "run"))
            baseline.append(rebase_loop(clone, args.releases))
    for index, what in ((0, "wall"), (1, "CPU ")):
        mine = min(o[index] for o in ours)
        theirs = min(b[index] for b in baseline)
        rows = [
            ("sync-upstream --step", mine, _times(ours, index)),
            ("git rebase loop", theirs, _times(baseline, index)),
        ]
        for name, best, every in rows:
            print(f"{what} {name:22}{best:6.2f} s  (all: {every})")
        print(f"{what} {'ratio':22}{mine / theirs:6.2f}x (target <= 2x)")
    return 0


def _times(values: list[tuple[float, float]], index: int) -> str:
    return ", ".join(f"{v[index]:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
