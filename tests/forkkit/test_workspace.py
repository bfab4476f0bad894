from __future__ import annotations

from pathlib import Path

from forkkit.commands import patches
from forkkit.project import Project
from forkkit.workspace import Workspace

from tests.forkkit.upstreams import Upstream


def test_apply_imports_the_base_sdist_as_an_upstream_tag(declared: Path) -> None:
    assert patches.main(["apply", "tiny"]) == 0

    project = Project(declared)
    workspace = Workspace(project, project.fork("tiny"))
    assert workspace.rev("refs/tags/upstream/1.0") == workspace.rev("HEAD")
    assert (workspace.path / "tinylib" / "core.py").is_file()


def test_sketch(upstream: Upstream) -> None:
    assert (upstream.index / "tinylib" / "tinylib-1.0.tar.gz").is_file()
