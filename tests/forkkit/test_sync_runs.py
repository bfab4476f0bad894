"""sync-upstream runs: discovery, --step, guards, safety and flag checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from packaging.version import Version

from forkkit import discover, sync
from forkkit.commands import sync_upstream
from forkkit.project import Project
from forkkit.report import EXIT_NEEDS_HUMAN, EXIT_UP_TO_DATE, EXIT_UPDATED
from tests.forkkit.syncing import (
    CORE,
    Scenario,
    edit,
    make_scenario,
    read,
    start_upstream,
)
from tests.forkkit.upstreams import git


def two_releases(tmp: Path, monkeypatch: pytest.MonkeyPatch, **kw: str) -> Scenario:
    """1.1 moves lines near patch 01; 1.2 rewrites the line patch 02 changes."""
    up = start_upstream(tmp / "upstream")
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "def function_11():", "def function_11(x=0):")},
        "Let function_11 take an argument",
    )
    up.release("1.1")
    up.commit({"README.md": "Tiny.\n"}, "Shorten the README")
    up.release("1.2rc1")
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "return 5\n", "return TABLE[5]\n")},
        "Compute function_5 from a table",
    )
    up.release("1.2")
    scenario = make_scenario(tmp, monkeypatch, up, **kw)
    scenario.add_patch(
        "01-merge.patch",
        {"tinylib/core.py": edit(CORE, "return 10\n", "return 100\n")},
        "Return 100 from function_10",
    )
    scenario.add_patch(
        "02-conflict.patch",
        {"tinylib/core.py": edit(CORE, "return 5\n", "return 50\n")},
        "Return 50 from function_5",
    )
    scenario.commit()
    return scenario


def report_of(scenario: Scenario) -> dict:  # type: ignore[type-arg]
    path = scenario.root / ".workspace" / "reports" / "sync-upstream-tiny.json"
    return json.loads(path.read_text())


def test_discovery_sorts_by_pep440_and_skips_pre_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)
    fork = Project(scenario.root).fork("tiny")

    assert discover.plan(fork).steps == ("1.2",)
    assert discover.plan(fork, step=True).steps == ("1.1", "1.2")
    assert discover.plan(fork, step=True, pre=True).steps == ("1.1", "1.2rc1", "1.2")
    assert discover.plan(fork, to="1.1").steps == ("1.1",)
    versions = [Version(v) for v in ("1.0", "1.9", "1.10", "1.10a1")]
    assert discover.plan(fork, versions=versions, step=True).steps == ("1.9", "1.10")


def test_discovery_reads_the_package_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = two_releases(tmp_path, monkeypatch, source="index")
    fork = Project(scenario.root).fork("tiny")

    assert [str(v) for v in discover.upstream_versions(fork)] == [
        "1.0",
        "1.1",
        "1.2rc1",
        "1.2",
    ]


def test_an_unknown_target_is_an_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)

    assert scenario.run("--to", "9.9") == 4

    assert "has no release 9.9" in capsys.readouterr().err
    assert not scenario.workspace.exists()


def test_step_meets_each_conflict_at_the_release_that_caused_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)

    assert scenario.run("--step") == EXIT_NEEDS_HUMAN

    report = report_of(scenario)
    assert report["steps"] == ["1.1", "1.2"]
    merge = report["patches"][0]["evidence"]
    assert [(e["release"], e["class"]) for e in merge] == [
        ("1.1", "applied-3way"),
        ("1.2", "applied"),
    ]
    conflict = report["conflict"]
    assert (conflict["old_base"], conflict["new_base"]) == ("1.1", "1.2")
    assert [c["subject"] for c in conflict["hunks"][0]["upstream_commits"]] == [
        "Compute function_5 from a table"
    ]


def test_abort_drops_a_stopped_run_and_a_new_run_is_refused_until_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)
    before = scenario.snapshot()
    assert scenario.run() == EXIT_NEEDS_HUMAN

    assert scenario.run() == 5
    assert "stopped at a conflict" in capsys.readouterr().err
    assert scenario.run("--abort") == 0
    assert scenario.snapshot() == before
    assert scenario.run("--to", "1.1") == EXIT_UPDATED


def test_a_failing_guard_stops_the_run_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = start_upstream(tmp_path / "upstream")
    up.commit({"README.md": "Tiny.\n"}, "Shorten the README")
    up.release("1.1")
    guards = '\n[guards]\n"01-two.patch" = ["tests/test_core.py::test_two"]\n'
    scenario = make_scenario(tmp_path, monkeypatch, up, extra=guards)
    scenario.add_patch(
        "01-two.patch",
        {"tinylib/core.py": edit(CORE, "return 2\n", "return 22\n")},
        "Return 22 from function_2",
    )
    scenario.commit()
    before = scenario.snapshot()

    assert scenario.run() == EXIT_NEEDS_HUMAN

    report = report_of(scenario)
    assert report["status"] == "guard-failed"
    (guard,) = report["guards"]
    assert guard["passed"] is False and "1 failed" in guard["output"]
    assert scenario.snapshot() == before
    assert scenario.run("--no-guards", "--to", "1.1") == 5  # still stopped

    # Fix the patch in the workspace; --continue runs the guard again.
    core = scenario.workspace / "tinylib" / "core.py"
    core.write_text(edit(core.read_text(), "return 22\n", "return 20\n"))
    git(scenario.workspace, "commit", "-q", "-a", "--amend", "--no-edit")
    assert scenario.run("--continue") == EXIT_UPDATED
    assert report_of(scenario)["guards"][0]["passed"] is True
    assert "+    return 20" in (scenario.series_dir / "01-two.patch").read_text()


def test_a_dirty_work_tree_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)
    (scenario.series_dir / "series").write_text("# edited\n")

    assert scenario.run() == 5

    assert "uncommitted changes (M patches/tiny/series)" in capsys.readouterr().err
    assert not scenario.workspace.exists()


def test_an_interrupted_run_leaves_forks_and_patches_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)
    before = scenario.snapshot()

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sync, "_publish", interrupt)
    assert scenario.run("--to", "1.1") == 130

    assert scenario.snapshot() == before
    assert "nothing was changed" in capsys.readouterr().err


def test_release_without_release_fork_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = two_releases(tmp_path, monkeypatch)

    assert scenario.run("--release") == 6

    assert "tools/release-fork, which is not in" in capsys.readouterr().err
    assert not scenario.workspace.exists()


@pytest.mark.parametrize(
    "args",
    [["--continue", "--step"], ["--abort", "--to", "1.1"], ["--continue", "--abort"]],
    ids=["continue-step", "abort-to", "continue-abort"],
)
def test_bad_flag_combinations_are_rejected(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        sync_upstream.main(args)

    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_updated_run_with_an_index_source_records_the_new_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = two_releases(tmp_path, monkeypatch, source="index")

    assert scenario.run("--to", "1.1") == EXIT_UPDATED
    assert scenario.run("--to", "1.1") == 5  # forks/ changed: not committed yet
    scenario.commit("sync to 1.1")
    assert scenario.run("--to", "1.1") == EXIT_UP_TO_DATE

    sdist = scenario.up.index / "tinylib" / "tinylib-1.1.tar.gz"
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert f'sha256 = "{digest}"' in scenario.declaration.read_text()
    assert 'version = "1.1"' in scenario.declaration.read_text()


def test_submitted_and_backport_references_found_upstream_drop_patches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = start_upstream(tmp_path / "upstream")
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "return 3\n", "return 3 * 1\n")},
        "Make function_3 explicit (#7)",
    )
    up.release("1.1")
    scenario = make_scenario(tmp_path, monkeypatch, up)
    scenario.add_patch(
        "01-submitted.patch",
        {"tinylib/core.py": edit(CORE, "return 3\n", "return 3 + 0\n")},
        "Make function_3 explicit",
        status="Submitted [https://example.invalid/tinylib/pull/7]",
    )
    scenario.add_patch(
        "02-backport.patch",
        {"tinylib/core.py": edit(CORE, "return 12\n", "return 12 + 0\n")},
        "Return 12 the 1.1 way",
        status="Backport [1.1]",
    )
    scenario.commit()

    assert scenario.run() == EXIT_UPDATED

    report = report_of(scenario)
    first, second = report["patches"]
    assert first["class"] == second["class"] == "dropped-upstream"
    assert "named by upstream commit" in first["evidence"][0]["detail"]
    assert first["evidence"][0]["commits"][0]["subject"] == (
        "Make function_3 explicit (#7)"
    )
    assert "the release 1.1 includes 1.1" in second["evidence"][0]["detail"]
    assert (scenario.series_dir / "series").read_text() == "# The tiny series.\n"


def test_a_3way_merge_that_shrinks_a_patch_says_so_and_rewrites_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = start_upstream(tmp_path / "upstream")
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "return 15\n", "return 150\n")},
        "Return 150 from function_15",
    )
    up.release("1.1")
    scenario = make_scenario(tmp_path, monkeypatch, up)
    half = edit(CORE, "return 15\n", "return 150\n")
    both = edit(half, "return 16\n", "return 160\n")
    scenario.add_patch("01-both.patch", {"tinylib/core.py": both}, "Return 150, 160")
    scenario.commit()

    assert scenario.run() == EXIT_UPDATED

    (patch,) = report_of(scenario)["patches"]
    assert patch["class"] == "applied-3way"
    assert (
        "changed its content (part of it is upstream now)"
        in (patch["evidence"][0]["detail"])
    )
    assert patch["series"] == "rewritten"
    text = (scenario.series_dir / "01-both.patch").read_text()
    assert "+    return 160" in text and "+    return 150" not in text


def test_a_submitted_patch_named_in_the_sdists_changelog_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = start_upstream(tmp_path / "upstream")
    core = read(up, "tinylib/core.py")
    up.commit(
        {
            "tinylib/core.py": edit(core, "return 3\n", "return 3 * 1\n"),
            "CHANGELOG.md": "# 1.1\n\n- function_3 is explicit (#7)\n",
        },
        "Make function_3 explicit",
    )
    up.release("1.1")
    scenario = make_scenario(tmp_path, monkeypatch, up, source="index")
    scenario.add_patch(
        "01-submitted.patch",
        {"tinylib/core.py": edit(CORE, "return 3\n", "return 3 + 0\n")},
        "Make function_3 explicit",
        status="Submitted [https://example.invalid/tinylib/pull/7]",
    )
    scenario.commit()

    assert scenario.run() == EXIT_UPDATED

    (patch,) = report_of(scenario)["patches"]
    assert patch["class"] == "dropped-upstream"
    assert patch["evidence"][0]["detail"] == (
        "Upstream-Status: Submitted [https://example.invalid/tinylib/pull/7]: "
        "the 1.1 changelog names it"
    )


@pytest.mark.parametrize(
    ("hunks", "lines", "expected"),
    [
        ([], (10, 12), (10, 12)),
        ([(2, 0, 3, 4)], (10, 12), (14, 16)),
        ([(2, 3, 2, 0)], (10, 12), (7, 9)),
        ([(11, 1, 11, 2)], (10, 12), (10, 13)),
        ([(20, 1, 20, 1)], (10, 12), (10, 12)),
    ],
    ids=[
        "no-change",
        "lines-added-above",
        "lines-removed-above",
        "changed-inside",
        "changed-below",
    ],
)
def test_map_range_follows_lines_from_the_old_to_the_new_base(
    hunks: list[tuple[int, int, int, int]],
    lines: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    assert sync.map_range(hunks, *lines) == expected


def three_releases(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    """1.1 changes the README; 1.2 moves lines near patch 01, takes patch 02."""
    up = start_upstream(tmp / "upstream")
    up.commit({"README.md": "Tiny.\n"}, "Shorten the README")
    up.release("1.1")
    core = read(up, "tinylib/core.py")
    core = edit(core, "def function_11():", "def function_11(x=0):")
    up.commit({"tinylib/core.py": core}, "Let function_11 take an argument")
    up.commit(
        {
            "tinylib/core.py": edit(core, "return 2\n", "return 20\n"),
            "tests/test_two.py": "def test_two():\n    pass\n",
        },
        "Return 20 from function_2, with a test",
    )
    up.release("1.2")
    scenario = make_scenario(tmp, monkeypatch, up)
    scenario.add_patch(
        "01-merge.patch",
        {"tinylib/core.py": edit(CORE, "return 10\n", "return 100\n")},
        "Return 100 from function_10",
    )
    scenario.commit()
    return scenario


def test_later_releases_are_carried_by_rebase_and_classified_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = three_releases(tmp_path, monkeypatch)
    used = []
    original = sync.Sync._rebase_cleanly

    def spy(self: sync.Sync, *args: object, **kwargs: object) -> bool:
        used.append(original(self, *args, **kwargs))  # type: ignore[arg-type]
        return used[-1]

    monkeypatch.setattr(sync.Sync, "_rebase_cleanly", spy)

    assert scenario.run("--step") == EXIT_UPDATED

    assert used == [False, True]  # 1.1 by git am, 1.2 by rebase
    (patch,) = report_of(scenario)["patches"]
    assert [(e["release"], e["class"]) for e in patch["evidence"]] == [
        ("1.1", "applied"),
        ("1.2", "applied-3way"),
    ]
    text = (scenario.series_dir / "01-merge.patch").read_text()
    assert "+    return 100" in text and "def function_11(x=0):" in text


def test_a_patch_that_becomes_empty_at_a_later_release_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = three_releases(tmp_path, monkeypatch)
    scenario.add_patch(
        "02-two.patch",
        {"tinylib/core.py": edit(CORE, "return 2\n", "return 20\n")},
        "Return 20 from function_2",
    )
    scenario.commit()

    assert scenario.run("--step") == EXIT_UPDATED

    report = report_of(scenario)
    two = report["patches"][1]
    assert [(e["release"], e["class"]) for e in two["evidence"]] == [
        ("1.1", "applied"),
        ("1.2", "dropped-upstream"),
    ]
    assert "became empty on 1.2" in two["evidence"][1]["detail"]
    assert [c["subject"] for c in two["evidence"][1]["commits"]] == [
        "Return 20 from function_2, with a test"
    ]
    assert (scenario.series_dir / "series").read_text().split()[-1] == "01-merge.patch"


def test_a_later_release_that_merged_a_patch_verbatim_rebases_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = start_upstream(tmp_path / "upstream")
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "def function_11():", "def function_11(x=0):")},
        "Let function_11 take an argument",
    )
    up.release("1.1")
    up.commit({"README.md": "Tiny library, extended.\n"}, "Say what tinylib does")
    up.release("1.2")
    scenario = make_scenario(tmp_path, monkeypatch, up)
    for name, (old, new) in {
        "01-two.patch": ("return 2\n", "return 20\n"),
        "03-three.patch": ("return 3\n", "return 30\n"),
    }.items():
        scenario.add_patch(name, {"tinylib/core.py": edit(CORE, old, new)}, name)
    scenario.add_patch(
        "02-readme.patch", {"README.md": "Tiny library, extended.\n"}, "Readme"
    )
    scenario.commit()

    assert scenario.run("--step") == EXIT_UPDATED

    report = report_of(scenario)
    assert [p["class"] for p in report["patches"]] == [
        "applied",
        "applied",
        "dropped-upstream",
    ]
    assert "has the same patch-id" in report["patches"][2]["evidence"][-1]["detail"]
    assert (scenario.series_dir / "series").read_text().split()[-2:] == [
        "01-two.patch",
        "03-three.patch",
    ]
