"""Import the real moto sdist and apply a 10-patch series, against plain git.

    .venv/bin/python bench/patches.py [--runs N]

Prints, for a warm sdist cache: the time of ``Workspace.apply`` from an empty
folder (import + checkout + series), the time of doing the same by hand
(``tar xzf``, ``git add``/``commit``, ``git am --3way``), the time of the bare
``git am --3way`` of the series onto an existing base, and the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from forkkit import index
from forkkit.gitenv import ISOLATED_ENV
from forkkit.project import Project
from forkkit.workspace import Workspace, load_series

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **ISOLATED_ENV,
    "PATH": "/usr/bin:/bin",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost.invalid",
}
FILES = [
    "moto/__init__.py",
    "moto/sqs/models.py",
    "moto/s3/models.py",
    "moto/dynamodb/models/__init__.py",
    "moto/sns/models.py",
    "moto/iam/models.py",
    "moto/kinesis/models.py",
    "moto/sts/models.py",
    "moto/apigateway/models.py",
    "moto/core/responses.py",
]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    ).stdout


def make_project(tmp: Path) -> tuple[Project, Path]:
    root = tmp / "project"
    (root / "forks").mkdir(parents=True)
    shutil.copy(ROOT / "forks" / "moto.toml", root / "forks" / "moto.toml")
    series = root / "patches" / "moto"
    series.mkdir(parents=True)
    (series / "series").write_text("# bench series\n")
    project = Project(root)
    fork = project.fork("moto")

    # Ten patches, each adding a line near the top of a different module.
    workspace = Workspace(project, fork, tmp / "authoring")
    workspace.apply([])
    for number, name in enumerate(FILES, 1):
        path = workspace.path / name
        lines = path.read_text().splitlines(keepends=True)
        lines.insert(min(5, len(lines)), f"BENCH_{number} = {number}\n")
        path.write_text("".join(lines))
        message = f"bench: patch {number}\n\nFor timing.\n\nUpstream-Status: Pending"
        workspace.git("commit", "-q", "-a", "-m", message)
    workspace.export(series)
    return project, series


def time_tool(project: Project, tmp: Path, run: int) -> float:
    fork = project.fork("moto")
    started = time.perf_counter()
    _, patches = load_series(project, fork)
    Workspace(project, fork, tmp / f"tool-{run}").apply(patches)
    return time.perf_counter() - started


def time_by_hand(sdist: Path, series: Path, tmp: Path, run: int) -> tuple[float, float]:
    repo = tmp / f"hand-{run}"
    repo.mkdir()
    names = [n for n in (series / "series").read_text().split() if n.endswith(".patch")]
    started = time.perf_counter()
    subprocess.run(
        ["tar", "xzf", str(sdist), "--strip-components=1", "-C", str(repo)], check=True
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", "base")
    am_started = time.perf_counter()
    git(repo, "am", "-q", "--3way", *(str(series / n) for n in names))
    done = time.perf_counter()
    return done - started, done - am_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-patches-") as name:
        tmp = Path(name)
        project, series = make_project(tmp)
        fork = project.fork("moto")
        release = index.find_sdist(
            fork.upstream.index_url, fork.upstream.project, fork.base.version
        )
        sdist = index.fetch_sdist(release, fork.base.sha256)

        tool, hand, am = [], [], []
        for run in range(args.runs):
            tool.append(time_tool(project, tmp, run))
            total, am_only = time_by_hand(sdist, series, tmp, run)
            hand.append(total)
            am.append(am_only)

    t, h, a = (statistics.median(x) for x in (tool, hand, am))
    print(f"moto {fork.base.version} sdist, 10-patch series, median of {args.runs}")
    print(f"  tools/patches apply (import + checkout + series): {t:6.2f} s")
    print(f"  by hand (tar xzf + git add/commit + git am -3):   {h:6.2f} s")
    print(f"  bare git am --3way of the series:                 {a:6.2f} s")
    print(f"  ratio tool / by hand: {t / h:.2f}x   tool / bare am: {t / a:.1f}x")
    print(f"  target: under 30 s on a warm cache -> {'met' if t < 30 else 'MISSED'}")


if __name__ == "__main__":
    main()
