"""End to end on the real upstream: the moto release sdist from the index.

The sdist is downloaded once into the machine's forkkit cache and verified
against the sha256 that forks/moto.toml declares.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forkkit.project import Project
from forkkit.workspace import Workspace, load_series

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.moto_sdist


def test_real_moto_sdist_imports_and_a_series_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "forks").mkdir(parents=True)
    shutil.copy(ROOT / "forks" / "moto.toml", root / "forks" / "moto.toml")
    series = root / "patches" / "moto"
    series.mkdir(parents=True)
    (series / "series").write_text("# test series\n")
    project = Project(root)
    fork = project.fork("moto")

    # Build the base, then write two patches in it as a maintainer would.
    first = Workspace(project, fork, tmp_path / "one")
    first.apply([])
    init = first.path / "moto" / "__init__.py"
    init.write_text(init.read_text() + "\nFORKED = True\n")
    first.git(
        "commit",
        "-q",
        "-a",
        "-m",
        "core: mark the fork\n\nSo that code can "
        "tell.\n\nUpstream-Status: Inappropriate [fork only]",
    )
    setup = first.path / "setup.cfg"
    setup.write_text(setup.read_text().replace("name = moto", "name = moto-ext"))
    first.git(
        "commit",
        "-q",
        "-a",
        "-m",
        "setup: rename\n\nPublished apart.\n\n"
        "Upstream-Status: Inappropriate [fork only]",
    )
    result = first.export(series)
    assert result.written == ["core-mark-the-fork.patch", "setup-rename.patch"]

    # A second workspace from scratch gives the same commits, exactly applied.
    _, patches = load_series(project, fork)
    outcomes = Workspace(project, fork, tmp_path / "two").apply(
        patches, objects_from=first.path
    )
    assert [o.outcome for o in outcomes] == ["applied", "applied"]
    assert [o.commit for o in outcomes] == first.git(
        "rev-list", "--reverse", "refs/forkkit/base..HEAD"
    ).splitlines()
    assert first.git("rev-parse", "refs/forkkit/base") == first.git(
        "rev-parse", "refs/tags/upstream/5.2.5"
    )
