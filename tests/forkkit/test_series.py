"""The series file and its patches: each mistake gets one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkkit.commands import patches
from tests.forkkit.conftest import CORE, snapshot
from tests.forkkit.upstreams import Upstream, make_patch


def add_patch(root: Path, upstream: Upstream, name: str, **kwargs: object) -> str:
    changes = kwargs.pop("changes", None) or {
        "tinylib/core.py": CORE.replace("return 3\n", "return 33\n")
    }
    text = make_patch(
        root.parent / "patch-work",
        upstream.repo,
        changes,
        **kwargs,  # type: ignore[arg-type]
    )
    (root / "patches" / "tiny" / name).write_text(text)
    return text


def set_series(root: Path, *lines: str) -> None:
    (root / "patches" / "tiny" / "series").write_text("\n".join(lines) + "\n")


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = patches.main(args)
    return status, capsys.readouterr().err


def test_missing_file_names_the_series_line(
    declared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_series(declared, "# header", "", "gone.patch")
    before = snapshot(declared)

    status, err = run_failing(["apply", "tiny"], capsys)

    assert status == 2
    assert err == (
        "error: patches/tiny/series:3: gone.patch does not exist in patches/tiny; "
        "add the file or remove the line\n"
    )
    assert snapshot(declared) == before


def test_file_listed_twice(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    add_patch(declared, upstream, "a.patch", subject="core: change three")
    set_series(declared, "a.patch", "a.patch")

    status, err = run_failing(["apply", "tiny"], capsys)

    assert status == 2
    assert "patches/tiny/series:2: a.patch is listed twice (first at line 1)" in err


def test_file_that_is_not_a_patch(
    declared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (declared / "patches" / "tiny" / "notes.patch").write_text("just some notes\n")
    set_series(declared, "notes.patch")

    status, err = run_failing(["apply", "tiny"], capsys)

    assert status == 2
    assert "error: patches/tiny/notes.patch: no 'diff --git' section" in err


@pytest.mark.parametrize(
    ("status_line", "message"),
    [
        pytest.param("", "no Upstream-Status trailer", id="missing"),
        pytest.param("Merged", "Upstream-Status 'Merged' is not valid", id="unknown"),
        pytest.param(
            "Submitted", "Upstream-Status Submitted needs a reference", id="no-ref"
        ),
        pytest.param(
            "Pending [soon]", "Upstream-Status Pending takes no [reference]", id="ref"
        ),
    ],
)
def test_invalid_upstream_status(
    declared: Path,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
    status_line: str,
    message: str,
) -> None:
    add_patch(declared, upstream, "a.patch", subject="core: x", status=status_line)
    set_series(declared, "a.patch")
    before = snapshot(declared)

    status, err = run_failing(["apply", "tiny"], capsys)

    assert status == 2
    assert err.startswith("error: patches/tiny/a.patch: ") and message in err
    assert snapshot(declared) == before


def test_check_reports_every_problem_at_once(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    add_patch(declared, upstream, "a.patch", subject="core: x", status="Merged")
    add_patch(declared, upstream, "stray.patch", subject="core: y")
    set_series(declared, "a.patch")

    status, err = run_failing(["check", "tiny"], capsys)

    assert status == 1
    assert "2 problem(s) in the tiny series" in err
    assert "patches/tiny/a.patch: Upstream-Status 'Merged' is not valid" in err
    assert "patches/tiny/stray.patch: not listed in patches/tiny/series" in err


def test_list_shows_subject_status_and_files(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    add_patch(
        declared,
        upstream,
        "fix.patch",
        subject="core: return 33",
        status="Submitted [https://example.invalid/pr/1]",
    )
    set_series(declared, "fix.patch")

    assert patches.main(["list", "tiny"]) == 0

    assert capsys.readouterr().out == (
        "  1 fix.patch\n"
        "    core: return 33\n"
        "    Upstream-Status: Submitted [https://example.invalid/pr/1]\n"
        "    files: tinylib/core.py\n"
    )
