"""sync-upstream carries a six-patch series from tinylib 1.0 to 1.1.

From 1.0 to 1.1 upstream: touches lines near patch 02 (3-way merge), merges
patch 03 verbatim (same patch-id), merges patch 04 in two commits of its own
(it becomes empty), contains the commit that patch 05 backports, and rewrites
the line patch 06 changes (a real conflict). Patch 01 still applies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forkkit.report import EXIT_NEEDS_HUMAN, EXIT_UP_TO_DATE, EXIT_UPDATED
from tests.forkkit.syncing import (
    CORE,
    Scenario,
    core_line,
    edit,
    make_scenario,
    read,
    resolve,
    start_upstream,
)
from tests.forkkit.upstreams import git

GUARDS = '\n[guards]\n"01-keep-working.patch" = ["tests/test_core.py::test_two"]\n'


def build(tmp: Path, monkeypatch: pytest.MonkeyPatch, source: str = "git") -> Scenario:
    up = start_upstream(tmp / "upstream")
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "def function_11():", "def function_11(x=0):")},
        "Let function_11 take an argument",
    )
    up.commit({"README.md": "Tiny library, extended.\n"}, "Say what tinylib does")
    core = read(up, "tinylib/core.py")
    up.commit(
        {
            "tinylib/core.py": edit(core, "return 15\n", "return 150\n"),
            "tests/test_15.py": "def test_15():\n    pass\n",
        },
        "Return 150 from function_15, with a test",
    )
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "return 16\n", "return 160\n")},
        "Return 160 from function_16",
    )
    core = read(up, "tinylib/core.py")
    backported = up.commit(
        {
            "tinylib/core.py": edit(
                core, "    return 18\n", "    # 180 since 1.1\n    return 180\n"
            )
        },
        "Return 180 from function_18",
    )
    core = read(up, "tinylib/core.py")
    up.commit(
        {"tinylib/core.py": edit(core, "return 5\n", "return TABLE[5]\n")},
        "Compute function_5 from a table",
    )
    up.release("1.1")

    scenario = make_scenario(tmp, monkeypatch, up, source=source, extra=GUARDS)
    path = "tinylib/core.py"
    add = scenario.add_patch
    add(
        "01-keep-working.patch",
        {path: edit(CORE, "return 2\n", "return 20\n")},
        "Return 20 from function_2",
    )
    add(
        "02-needs-merge.patch",
        {path: edit(CORE, "return 10\n", "return 100\n")},
        "Return 100 from function_10",
    )
    add(
        "03-verbatim.patch",
        {"README.md": "Tiny library, extended.\n"},
        "Say what tinylib does",
    )
    add(
        "04-partly.patch",
        {
            path: edit(
                edit(CORE, "return 15\n", "return 150\n"), "return 16\n", "return 160\n"
            )
        },
        "Return 150 and 160",
    )
    add(
        "05-backport.patch",
        {path: edit(CORE, "return 18\n", "return 180\n")},
        "Return 180 from function_18",
        status=f"Backport [{backported}]",
    )
    add(
        "06-conflict.patch",
        {path: edit(CORE, "return 5\n", "return 50\n")},
        "Return 50 from function_5",
    )
    scenario.commit()
    return scenario


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    return build(tmp_path, monkeypatch)


def report_of(scenario: Scenario) -> dict:  # type: ignore[type-arg]
    path = scenario.root / ".workspace" / "reports" / "sync-upstream-tiny.json"
    return json.loads(path.read_text())


def classes(report: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {p["file"]: p["class"] for p in report["patches"]}


def evidence(report: dict, file: str) -> str:  # type: ignore[type-arg]
    patch = next(p for p in report["patches"] if p["file"] == file)
    return " / ".join(e["detail"] for e in patch["evidence"])


def test_each_patch_gets_its_class_and_the_conflict_stops_the_run(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    before = scenario.snapshot()

    assert scenario.run() == EXIT_NEEDS_HUMAN

    report = report_of(scenario)
    assert report["status"] == "conflict"
    assert report["exit_code"] == 11
    assert classes(report) == {
        "01-keep-working.patch": "applied",
        "02-needs-merge.patch": "applied-3way",
        "03-verbatim.patch": "dropped-upstream",
        "04-partly.patch": "dropped-upstream",
        "05-backport.patch": "dropped-upstream",
        "06-conflict.patch": "conflict",
    }
    assert scenario.snapshot() == before
    markdown = capsys.readouterr().out
    assert "| `02-needs-merge.patch` | applied-3way |" in markdown
    assert "## Conflict: `06-conflict.patch`" in markdown


def test_a_patch_merged_verbatim_is_dropped_by_patch_id(scenario: Scenario) -> None:
    scenario.run()

    report = report_of(scenario)
    patch = next(p for p in report["patches"] if p["file"] == "03-verbatim.patch")
    (last,) = patch["evidence"]
    assert last["class"] == "dropped-upstream"
    assert "has the same patch-id" in last["detail"]
    assert [c["subject"] for c in last["commits"]] == ["Say what tinylib does"]
    assert last["commits"][0]["author"] == "Upstream Dev <dev@upstream.invalid>"


def test_a_patch_upstream_merged_in_parts_becomes_empty_and_is_dropped(
    scenario: Scenario,
) -> None:
    scenario.run()

    report = report_of(scenario)
    assert "became empty on 1.1" in evidence(report, "04-partly.patch")
    patch = next(p for p in report["patches"] if p["file"] == "04-partly.patch")
    subjects = {c["subject"] for c in patch["evidence"][-1]["commits"]}
    assert {
        "Return 150 from function_15, with a test",
        "Return 160 from function_16",
    } <= subjects


def test_a_backport_whose_commit_is_in_the_new_base_is_dropped(
    scenario: Scenario,
) -> None:
    scenario.run()

    report = report_of(scenario)
    detail = evidence(report, "05-backport.patch")
    assert detail.startswith("Upstream-Status: Backport [")
    assert "is in the new base 1.1" in detail
    patch = next(p for p in report["patches"] if p["file"] == "05-backport.patch")
    assert (
        patch["evidence"][0]["commits"][0]["subject"] == "Return 180 from function_18"
    )


def test_a_patch_near_upstream_changes_applies_with_a_3way_merge(
    scenario: Scenario,
) -> None:
    scenario.run()

    report = report_of(scenario)
    assert "by a 3-way merge; its change is kept" in evidence(
        report, "02-needs-merge.patch"
    )
    assert evidence(report, "01-keep-working.patch") == "applied exactly on 1.1"


def test_the_conflict_report_names_hunk_lines_and_the_upstream_commit(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outputs = tmp_path / "github-output"
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    assert scenario.run() == EXIT_NEEDS_HUMAN

    conflict = report_of(scenario)["conflict"]
    assert conflict["patch"] == "06-conflict.patch"
    assert (conflict["old_base"], conflict["new_base"]) == ("1.0", "1.1")
    (hunk,) = conflict["hunks"]
    assert hunk["file"] == "tinylib/core.py"
    line = core_line(5)
    assert hunk["new_base_lines"][0] <= line <= hunk["new_base_lines"][1]
    assert [c["subject"] for c in hunk["upstream_commits"]] == [
        "Compute function_5 from a table"
    ]
    assert hunk["conflict_marker_lines"]
    assert conflict["unresolved_files"] == ["tinylib/core.py"]
    patch_text = (scenario.series_dir / "06-conflict.patch").read_text().splitlines()
    assert patch_text[hunk["patch_line"] - 1].startswith("@@ ")

    assert "status=conflict\n" in outputs.read_text()
    assert "conflict-patch=06-conflict.patch\n" in outputs.read_text()
    assert "## Conflict: `06-conflict.patch`" in summary.read_text()


def test_github_annotation_points_at_the_patch_file_and_hunk_line(
    scenario: Scenario,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    scenario.run()

    hunk = report_of(scenario)["conflict"]["hunks"][0]
    (annotation,) = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("::")
    ]
    assert annotation.startswith(
        f"::error file=patches/tiny/06-conflict.patch,line={hunk['patch_line']},"
    )
    assert "Compute function_5 from a table" in annotation


def test_continue_after_resolving_refreshes_series_base_and_keeps_resolution(
    scenario: Scenario,
) -> None:
    assert scenario.run() == EXIT_NEEDS_HUMAN
    resolve(scenario.workspace / "tinylib/core.py", "    return TABLE[5] * 10\n")
    git(scenario.workspace, "add", "tinylib/core.py")

    assert scenario.run("--continue") == EXIT_UPDATED

    report = report_of(scenario)
    assert report["status"] == "updated"
    assert report["new_base"] == {"version": "1.1", "hash": None}
    assert classes(report)["06-conflict.patch"] == "resolved"
    assert report["guards"][0]["passed"] is True
    declaration = scenario.declaration.read_text()
    assert 'version = "1.1"' in declaration and "sha256" not in declaration
    assert (scenario.series_dir / "series").read_text().splitlines()[1:] == [
        "01-keep-working.patch",
        "02-needs-merge.patch",
        "06-conflict.patch",
    ]
    for dropped in ("03-verbatim.patch", "04-partly.patch", "05-backport.patch"):
        assert not (scenario.series_dir / dropped).exists()
    assert (
        "+    return TABLE[5] * 10"
        in (scenario.series_dir / "06-conflict.patch").read_text()
    )
    kept = list((scenario.series_dir / "rerere").glob("*/postimage"))
    assert len(kept) == 1
    assert (
        "## Dropped from the series"
        in (scenario.root / ".workspace/reports/sync-upstream-tiny.md").read_text()
    )


def test_a_recorded_resolution_is_reused_by_a_fresh_workspace(
    scenario: Scenario,
) -> None:
    scenario.run()
    resolve(scenario.workspace / "tinylib/core.py", "    return TABLE[5] * 10\n")
    git(scenario.workspace, "add", "tinylib/core.py")
    scenario.run("--continue")
    resolved = (scenario.series_dir / "06-conflict.patch").read_text()
    scenario.commit("sync to 1.1")

    # Someone else carries the old series again, in a fresh workspace, with
    # the resolutions kept in the series.
    git(scenario.root, "checkout", "HEAD~1", "--", "forks", "patches/tiny")
    scenario.commit("back to 1.0, keeping the recorded resolution")
    shutil.rmtree(scenario.root / ".workspace")

    assert scenario.run() == EXIT_UPDATED

    report = report_of(scenario)
    assert classes(report)["06-conflict.patch"] == "resolved"
    assert "by the recorded resolution patches/tiny/rerere/" in evidence(
        report, "06-conflict.patch"
    )
    assert (scenario.series_dir / "06-conflict.patch").read_text() == resolved


def test_the_sdist_source_reports_the_release_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = build(tmp_path, monkeypatch, source="index")

    assert scenario.run() == EXIT_NEEDS_HUMAN

    report = report_of(scenario)
    assert classes(report)["03-verbatim.patch"] == "dropped-upstream"
    assert "became empty on 1.1" in evidence(report, "03-verbatim.patch")
    (hunk,) = report["conflict"]["hunks"]
    assert hunk["upstream_commits"] == []
    assert hunk["upstream_range"] == "1.0..1.1"


def test_an_up_to_date_series_exits_0_and_changes_nothing(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    before = scenario.snapshot()

    assert scenario.run("--to", "1.0") == EXIT_UP_TO_DATE

    assert report_of(scenario)["status"] == "up-to-date"
    assert scenario.snapshot() == before
    assert "tiny is up to date" in capsys.readouterr().out
    assert scenario.run("--to", "1.0", "--json") == EXIT_UP_TO_DATE
    printed = json.loads(capsys.readouterr().out)
    assert printed == report_of(scenario)
    assert set(classes(printed).values()) == {"unchanged"}


def test_a_resolution_to_upstreams_version_drops_the_patch(
    scenario: Scenario,
) -> None:
    assert scenario.run() == EXIT_NEEDS_HUMAN
    resolve(scenario.workspace / "tinylib/core.py", "    return TABLE[5]\n")
    git(scenario.workspace, "add", "tinylib/core.py")

    assert scenario.run("--continue") == EXIT_UPDATED

    report = report_of(scenario)
    assert classes(report)["06-conflict.patch"] == "dropped-upstream"
    assert "resolved to no change" in evidence(report, "06-conflict.patch")
    assert not (scenario.series_dir / "06-conflict.patch").exists()


def test_continue_refuses_while_files_are_unresolved(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    assert scenario.run() == EXIT_NEEDS_HUMAN
    before = scenario.snapshot()

    assert scenario.run("--continue") == 5

    assert "still unresolved: tinylib/core.py" in capsys.readouterr().err
    assert scenario.snapshot() == before
