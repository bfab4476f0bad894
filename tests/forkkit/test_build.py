"""forkkit.build.Build: sdist and wheel, one after the other or side by side."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import pytest

from forkkit import build
from forkkit.errors import BuildFailed

# A setup.py that builds a wheel but fails (or stalls) its sdist: what a
# broken sdist looks like while the wheel builds fine.
SETUP_PY = """\
import os, sys, time
from setuptools import setup
if "sdist" in sys.argv:
    {sdist}
setup(name="tiny", version="1.0", py_modules=["tiny"])
"""


def tree(root: Path, sdist: str = "pass") -> Path:
    root.mkdir()
    (root / "setup.py").write_text(SETUP_PY.format(sdist=sdist))
    (root / "tiny.py").write_text("X = 1\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n'
    )
    return root


def copies(tmp_path: Path, sdist: str = "pass") -> list[Path]:
    first = tree(tmp_path / "a", sdist)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    return [first, second]


@pytest.mark.parametrize("number", sorted(build.RECIPES))
def test_every_recipe_builds_a_wheel_and_an_sdist_dated_by_the_epoch(
    tmp_path: Path, number: int
) -> None:
    recipe = build.RECIPES[number]
    trees = copies(tmp_path)[: build.trees_needed(recipe)]
    with build.Build(trees, tmp_path / "dist", 1_700_000_000, recipe) as building:
        artifacts = building.artifacts()
        assert building.together == (number == 2)
    assert artifacts.wheel.name == "tiny-1.0-py3-none-any.whl"
    assert artifacts.sdist.name == "tiny-1.0.tar.gz"
    with zipfile.ZipFile(artifacts.wheel) as wheel:
        assert "tiny.py" in wheel.namelist()
        assert {i.date_time for i in wheel.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_a_failing_sdist_build_is_reported_with_its_output(tmp_path: Path) -> None:
    trees = copies(tmp_path, 'raise SystemExit("no sdist today")')
    with build.Build(trees, tmp_path / "dist", 0, build.RECIPES[2]) as building:
        assert building.wheel().is_file()
        with pytest.raises(BuildFailed) as raised:
            building.sdist()
    message = str(raised.value)
    assert message.startswith("python -m build --sdist failed (exit status 1)")
    assert "no sdist today" in message
    assert list(tmp_path.glob(".sdist-build-*")) == []  # its output is gone


def test_leaving_the_block_stops_an_sdist_build_still_running(tmp_path: Path) -> None:
    # The backend runs in a child of `python -m build`; it must stop too.
    trees = copies(
        tmp_path, 'open("backend.pid", "w").write(str(os.getpid())); time.sleep(120)'
    )
    pid_file = trees[0] / "backend.pid"
    started = time.monotonic()
    with build.Build(trees, tmp_path / "dist", 0, build.RECIPES[2]) as building:
        building.wheel()
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.monotonic() - started < 60, "the sdist backend never started"
            time.sleep(0.05)
    backend = int(pid_file.read_text())

    # SIGKILL takes effect when the backend is next scheduled: wait for it to
    # be gone, or a zombie whose parent is gone as well.
    while _alive(backend):
        assert time.monotonic() - started < 60, "the sdist backend still runs"
        time.sleep(0.05)
    assert list((tmp_path / "dist").glob("*.tar.gz")) == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_recorded_recipe_is_known_by_its_whole_record() -> None:
    assert build.recipe_number(dict(build.RECIPES[1])) == 1
    assert build.recipe_number({**build.RECIPES[2], "wheel": "other"}) is None
    assert build.recipe_number(None) is None
