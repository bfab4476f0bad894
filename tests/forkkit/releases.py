"""A tiny setuptools upstream and a project around it, for release tests.

The upstream builds real sdists and wheels in a second or two, ships a test
that the fork's guards can name, and is published as an sdist in a
``file://`` index, so that a whole release runs without any network except
for pytest itself (installed once per session into the dependency cache).
"""

from __future__ import annotations

from pathlib import Path

from forkkit.project import Project
from tests.forkkit.upstreams import Upstream, make_patch, write_declaration

SETUP_CFG = """\
[metadata]
name = tinylib
version = {version}
description = A tiny library
long_description = file: README.md
long_description_content_type = text/markdown
license = Apache-2.0

[options]
packages = tinylib
include_package_data = True
"""
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""
TEST = """\
import tinylib


def test_answer():
    assert tinylib.answer() == {answer}
"""
PROJECT_PYPROJECT = """\
[project]
name = "app"
version = "1.0"
dependencies = [
    # the application's own requirements; the pin is added below them
    "requests>=2",
]
"""
RELEASE_TABLE = """
[release]
package = "tinylib"
test-requirements = ["pytest"]
"""


def tiny_upstream(root: Path) -> tuple[Upstream, str]:
    """tinylib 1.0 (a package, a test, setuptools metadata) and its sdist hash."""
    up = Upstream(root)
    up.commit(
        {
            "tinylib/__init__.py": (
                '__version__ = "1.0"\n\n\ndef answer():\n    return 42\n'
            ),
            "tests/__init__.py": "",
            "tests/test_answer.py": TEST.format(answer=42),
            "setup.cfg": SETUP_CFG.format(version="1.0"),
            "pyproject.toml": PYPROJECT,
            "README.md": "# tinylib\n\nA tiny library.\n",
        },
        "Start tinylib",
    )
    sha = up.release("1.0")
    assert sha is not None
    return up, sha


def tiny_project(root: Path, upstream: Upstream, sha: str, guards: str = "") -> Project:
    """A project declaring fork ``tiny`` of tinylib 1.0, with a pyproject."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PROJECT_PYPROJECT)
    write_declaration(
        root, upstream, version="1.0", sha256=sha, extra=guards + RELEASE_TABLE
    )
    return Project(root)


def add_patch(
    project: Project,
    upstream: Upstream,
    work: Path,
    answer: int,
    *,
    change_test: bool = True,
) -> str:
    """Add a patch changing ``answer()`` to the series; return its file name.

    With *change_test* False the upstream test still expects the old answer,
    so a guard naming it fails.
    """
    tree = work / "base"
    if not tree.exists():
        tree.mkdir(parents=True)
        for name in ("tinylib/__init__.py", "tests/test_answer.py"):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text((upstream.repo / name).read_text())
    changes = {
        "tinylib/__init__.py": (
            f'__version__ = "1.0"\n\n\ndef answer():\n    return {answer}\n'
        ),
    }
    if change_test:
        changes["tests/test_answer.py"] = TEST.format(answer=answer)
    text = make_patch(
        work / f"patch-{answer}",
        tree,
        dict(changes),
        f"Answer {answer}",
        body=f"The application needs {answer}.",
    )
    name = f"answer-{answer}.patch"
    series = project.root / "patches" / "tiny"
    (series / name).write_text(text)
    with (series / "series").open("a") as out:
        out.write(name + "\n")
    # Later patches build on this one.
    for path in changes:
        (tree / path).write_text((work / f"patch-{answer}" / path).read_text())
    return name
