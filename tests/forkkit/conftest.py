from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.forkkit.upstreams import Upstream, write_declaration

CORE = "".join(f"def function_{n}():\n    return {n}\n\n\n" for n in range(1, 21))
SETUP_CFG = "[metadata]\nname = tinylib\nversion = {version}\n"


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    """A tiny upstream with one release, 1.0, as a git tag and an sdist."""
    up = Upstream(tmp_path / "upstream")
    up.commit(
        {
            "tinylib/__init__.py": '__version__ = "1.0"\n',
            "tinylib/core.py": CORE,
            "setup.cfg": SETUP_CFG.format(version="1.0"),
            "README.md": "Tiny library.\n",
        },
        "Start tinylib",
    )
    up.sha256 = up.release("1.0")
    return up


@pytest.fixture
def project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder that the commands use, with its own cache."""
    root = tmp_path / "project"
    (root / "forks").mkdir(parents=True)
    monkeypatch.setenv("FORKKIT_ROOT", str(root))
    monkeypatch.setenv("FORKKIT_CACHE", str(tmp_path / "cache"))
    return root


@pytest.fixture
def declared(project_root: Path, upstream: Upstream) -> Path:
    """*project_root* with fork ``tiny`` declared on tinylib 1.0 from the index."""
    write_declaration(project_root, upstream, version="1.0", sha256=upstream.sha256)
    return project_root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under forks/ and patches/, to prove a failure changed nothing."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in ("forks", "patches")
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


Snapshot = Callable[[Path], dict[str, bytes]]
