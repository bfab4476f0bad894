"""tools/patches guards: a guard test must fail on the base and pass with the series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forkkit.commands import patches
from tests.forkkit.conftest import CORE, snapshot
from tests.forkkit.test_series import add_patch, set_series
from tests.forkkit.upstreams import Upstream

ROOT = Path(__file__).resolve().parents[2]

# A test in upstream's style that the patch "core: return 33" brings along.
GUARD_TEST = "from tinylib.core import function_3\n\n\ndef test_three():\n"
GUARD_TEST += "    assert function_3() == 33\n"
# A test that holds with or without any patch: it guards nothing.
IDLE_TEST = "from tinylib.core import function_4\n\n\ndef test_four():\n"
IDLE_TEST += "    assert function_4() == 4\n"


def declare_guards(root: Path, guards: dict[str, list[str]]) -> None:
    lines = ["", "[guards]"]
    lines += [f'"{patch}" = {json.dumps(tests)}' for patch, tests in guards.items()]
    with (root / "forks" / "tiny.toml").open("a") as declaration:
        declaration.write("\n".join(lines) + "\n")


def guarded_series(root: Path, upstream: Upstream) -> None:
    add_patch(
        root,
        upstream,
        "three.patch",
        subject="core: return 33",
        changes={
            "tinylib/core.py": CORE.replace("return 3\n", "return 33\n"),
            "tests/test_three.py": GUARD_TEST,
        },
    )
    add_patch(
        root,
        upstream,
        "idle.patch",
        subject="readme: say it is a fork",
        changes={
            "README.md": "Tiny library, patched.\n",
            "tests/test_four.py": IDLE_TEST,
        },
    )
    set_series(root, "three.patch", "idle.patch")


def test_a_guard_that_fails_on_the_base_and_passes_with_the_series_is_proven(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_series(declared, upstream)
    set_series(declared, "three.patch")
    declare_guards(declared, {"three.patch": ["tests/test_three.py::test_three"]})
    before = snapshot(declared)

    assert patches.main(["guards", "tiny", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    (proof,) = report["patches"]
    assert proof["patch"] == "three.patch"
    assert proof["base"]["outcome"] == "failed"
    assert "1 failed" in proof["base"]["summary"]
    assert proof["series"]["outcome"] == "passed"
    assert proof["guarded"] is True
    assert snapshot(declared) == before


def test_a_guard_that_passes_on_the_base_too_is_reported_as_guarding_nothing(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_series(declared, upstream)
    declare_guards(
        declared,
        {"three.patch": ["tests/test_three.py"], "idle.patch": ["tests/test_four.py"]},
    )

    assert patches.main(["guards", "tiny"]) == 1

    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0] == "| patch | guard tests | on 1.0 | with the series |"
    assert table[2].startswith("| three.patch | 1 | 1 failed in ")
    assert table[3].startswith("| idle.patch | 1 | 1 passed in ")
    assert "1 patch(es) of tiny not guarded" in captured.err
    assert "idle.patch: its guard tests passed on the base too" in captured.err
    assert "  three.patch:" not in captured.err


def test_a_patch_without_guards_and_a_guard_naming_no_patch_are_errors(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_series(declared, upstream)
    declare_guards(declared, {"three.patch": ["tests/test_three.py"]})

    assert patches.main(["guards", "tiny"]) == 1
    assert "idle.patch: declares no guard tests" in capsys.readouterr().err

    declare_guards_text = (declared / "forks" / "tiny.toml").read_text()
    (declared / "forks" / "tiny.toml").write_text(
        declare_guards_text.replace('"three.patch"', '"gone.patch"')
    )
    assert patches.main(["guards", "tiny"]) == 2
    assert "key 'guards.gone.patch' names a patch that is not in the series" in (
        capsys.readouterr().err
    )


@pytest.mark.moto_sdist
@pytest.mark.slow
def test_each_moto_patch_is_guarded_by_a_test_that_fails_on_upstream_moto(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "project"
    for name in ("forks", "patches"):
        shutil.copytree(ROOT / name, project / name)
    monkeypatch.setenv("FORKKIT_ROOT", str(project))
    monkeypatch.delenv("FORKKIT_CACHE", raising=False)  # the machine's sdist cache

    assert patches.main(["guards", "moto", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    series = (ROOT / "patches" / "moto" / "series").read_text().split()
    assert [proof["patch"] for proof in report["patches"]] == [
        name for name in series if name.endswith(".patch")
    ]
    for proof in report["patches"]:
        assert proof["base"]["outcome"] == "failed", proof
        assert proof["series"]["outcome"] == "passed", proof
