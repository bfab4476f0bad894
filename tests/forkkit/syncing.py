"""Release-to-release scenarios for sync-upstream, built on ``upstreams``.

A scenario is a tiny upstream with releases, a project (a git checkout, as
sync-upstream refuses anything else) that declares the fork on the first
release, and a series written against that release.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from forkkit.commands import sync_upstream
from tests.forkkit.upstreams import Upstream, git, make_patch, write_declaration

CORE = "".join(f"def function_{n}():\n    return {n}\n\n\n" for n in range(1, 21))
TESTS = (
    "from tinylib.core import function_2\n\n\n"
    "def test_two():\n    assert function_2() == 20\n"
)


def core_line(n: int) -> int:
    """The line of ``return n`` in the original core.py."""
    return 4 * (n - 1) + 2


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def start_upstream(root: Path) -> Upstream:
    """tinylib 1.0: twenty functions, a README and a test."""
    up = Upstream(root)
    up.commit(
        {
            "tinylib/__init__.py": "",
            "tinylib/core.py": CORE,
            "tests/test_core.py": TESTS,
            "README.md": "Tiny library.\n",
        },
        "Start tinylib",
    )
    up.release("1.0")
    return up


def read(up: Upstream, path: str) -> str:
    return (up.repo / path).read_text()


@dataclass
class Scenario:
    """A project with fork ``tiny`` and its series, on an upstream."""

    up: Upstream
    root: Path
    series: list[str] = field(default_factory=list)

    @property
    def series_dir(self) -> Path:
        return self.root / "patches" / "tiny"

    @property
    def declaration(self) -> Path:
        return self.root / "forks" / "tiny.toml"

    @property
    def workspace(self) -> Path:
        return self.root / ".workspace" / "tiny-sync"

    def add_patch(
        self, name: str, changes: dict[str, str], subject: str, status: str = "Pending"
    ) -> None:
        """Write a patch made against release 1.0 and list it in the series."""
        tree = self.root.parent / "tree-1.0"
        if not tree.exists():
            tree.mkdir()
            archive = subprocess.run(
                ["git", "archive", "1.0"], cwd=self.up.repo, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        text = make_patch(
            self.root.parent / "patch-work", tree, changes, subject, status=status
        )
        (self.series_dir / name).write_text(text)
        self.series.append(name)
        (self.series_dir / "series").write_text(
            "# The tiny series.\n" + "".join(f"{n}\n" for n in self.series)
        )

    def commit(self, message: str = "project state") -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)

    def run(self, *args: str) -> int:
        return sync_upstream.main(["tiny", *args])

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for folder in ("forks", "patches")
            for p in sorted((self.root / folder).rglob("*"))
            if p.is_file()
        }


def make_scenario(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    up: Upstream,
    *,
    source: str = "git",
    extra: str = "",
) -> Scenario:
    """A project declaring fork ``tiny`` on *up* 1.0, as a git checkout."""
    root = tmp / "project"
    sha = None
    if source == "index":
        sdist = up.index / up.project / f"{up.project}-1.0.tar.gz"
        sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    write_declaration(root, up, version="1.0", sha256=sha, source=source, extra=extra)
    (root / ".gitignore").write_text("/.workspace/\n")
    git(root, "init", "-q", "-b", "main")
    monkeypatch.setenv("FORKKIT_ROOT", str(root))
    monkeypatch.setenv("FORKKIT_CACHE", str(tmp / "cache"))
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    return Scenario(up, root)


def resolve(path: Path, replacement: str) -> None:
    """Replace every conflict block in *path* with *replacement*."""
    out, inside = [], False
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("<<<<<<< "):
            inside = True
            out.append(replacement)
        elif line.startswith(">>>>>>> "):
            inside = False
        elif not inside:
            out.append(line)
    path.write_text("".join(out))
