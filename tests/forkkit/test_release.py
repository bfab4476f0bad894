"""tools/release-fork against the local index, with a tiny setuptools upstream."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from forkkit import build, checks
from forkkit.commands import release_fork
from forkkit.errors import ReleaseCheckFailed
from forkkit.project import Project
from forkkit.release import Transaction
from tests.forkkit.releases import add_patch, tiny_project, tiny_upstream
from tests.forkkit.upstreams import Upstream, make_patch

GUARD = '\n[guards]\n"answer-7.patch" = ["tests/test_answer.py::test_answer"]\n'


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per session: the guard tests' pytest is installed once."""
    return tmp_path_factory.mktemp("forkkit-cache")


@pytest.fixture
def tiny(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release_cache: Path
) -> Iterator[tuple[Project, Upstream]]:
    upstream, sha = tiny_upstream(tmp_path / "upstream")
    project = tiny_project(tmp_path / "project", upstream, sha)
    monkeypatch.setenv("FORKKIT_ROOT", str(project.root))
    monkeypatch.setenv("FORKKIT_CACHE", str(release_cache))
    yield project, upstream


@pytest.fixture(autouse=True)
def _log_capture(caplog: pytest.LogCaptureFixture) -> None:
    global _caplog
    caplog.set_level(logging.INFO)
    _caplog = caplog


_caplog: pytest.LogCaptureFixture | None = None


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command; return its status, stdout and stderr (log lines too)."""
    assert _caplog is not None
    _caplog.clear()
    status = release_fork.main(list(args))
    out, err = capsys.readouterr()
    return status, out, _caplog.text + err


def released(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    status, out, err = run_cli(capsys, "--json", *args)
    assert status == 0, err
    result: dict[str, object] = json.loads(out)
    return result


@contextmanager
def edited_pin_record(project: Project) -> Iterator[dict[str, Any]]:
    """The pin's provenance record as data, written back as edited."""
    record = project.root / "requirements" / "tiny-ext.provenance.json"
    data = json.loads(record.read_text())
    yield data
    record.write_text(json.dumps(data))


def state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the pin and the local index, with its modification time."""
    files = [root / "pyproject.toml", *sorted((root / "requirements").rglob("*"))]
    files += sorted((root / "index").rglob("*")) if (root / "index").exists() else []
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in files
        if p.is_file()
    }


def test_first_release_is_post1_on_the_local_index_and_pinned(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    root = project.root

    result = released(capsys, "tiny")

    assert result["status"] == "released"
    assert result["version"] == "1.0.post1"
    files = result["files"]
    assert isinstance(files, dict)
    assert sorted(files) == [
        "tiny_ext-1.0.post1-py3-none-any.whl",
        "tiny_ext-1.0.post1.tar.gz",
    ]
    page = (root / "index" / "tiny-ext" / "index.html").read_text()
    for name, digest in files.items():
        assert f'href="{name}#sha256={digest}"' in page
        assert (root / "index" / "tiny-ext" / name).is_file()
    sums = (root / "dist" / "tiny" / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{files[n]}  {n}" for n in sorted(files)]

    # The pin: the exact requirement, the comment kept, hashes in the lock file.
    pyproject = (root / "pyproject.toml").read_text()
    assert (
        "    # the application's own requirements; the pin is added below" in pyproject
    )
    assert '    "requests>=2",\n    "tiny-ext==1.0.post1",\n]' in pyproject
    lock = (root / "requirements" / "tiny-ext.txt").read_text()
    assert "tiny-ext==1.0.post1 \\\n" in lock
    for digest in files.values():
        assert f"--hash=sha256:{digest}" in lock


def test_the_wheel_carries_its_provenance(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, upstream = tiny
    add_patch(project, upstream, project.root.parent / "work", 7)

    released(capsys, "tiny")

    wheel = project.root / "dist" / "tiny" / "tiny_ext-1.0.post1-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        record = json.loads(archive.read("tinylib/_provenance.json"))
        init = archive.read("tinylib/__init__.py").decode()
    assert '__version__ = "1.0.post1"' in init
    assert record["fork"] == "tiny"
    assert record["distribution"] == "tiny-ext"
    assert record["version"] == "1.0.post1"
    assert record["base"]["version"] == "1.0"
    assert record["upstream"]["project"] == "tinylib"
    [patch] = record["patches"]
    assert patch["file"] == "answer-7.patch"
    assert patch["subject"] == "Answer 7"
    assert patch["upstream_status"] == "Pending"
    text = (project.root / "patches" / "tiny" / "answer-7.patch").read_bytes()
    assert patch["sha256"] == hashlib.sha256(text).hexdigest()


def test_a_second_run_publishes_nothing_and_changes_no_file(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    released(capsys, "tiny")
    before = state(project.root)

    status, out, err = run_cli(capsys, "tiny")

    assert status == 0
    assert "nothing to do: tiny-ext 1.0.post1" in err
    assert out.splitlines()[0] == "tiny-ext 1.0.post1"
    assert state(project.root) == before


def test_a_new_patch_gives_post2_after_its_guard_passes(
    tiny: tuple[Project, Upstream],
    capsys: pytest.CaptureFixture[str],
) -> None:
    project, upstream = tiny
    released(capsys, "tiny")
    add_patch(project, upstream, project.root.parent / "work", 7)
    with (project.root / "forks" / "tiny.toml").open("a") as out:
        out.write(GUARD)

    result = released(capsys, "tiny")

    assert result["version"] == "1.0.post2"
    steps = result["steps"]
    assert isinstance(steps, dict) and "gate" in steps
    assert '"tiny-ext==1.0.post2"' in (project.root / "pyproject.toml").read_text()
    names = sorted(p.name for p in (project.root / "index" / "tiny-ext").iterdir())
    assert names == [
        "index.html",
        "tiny_ext-1.0.post1-py3-none-any.whl",
        "tiny_ext-1.0.post1.tar.gz",
        "tiny_ext-1.0.post2-py3-none-any.whl",
        "tiny_ext-1.0.post2.tar.gz",
    ]


def test_a_failing_guard_stops_the_release_before_publishing(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, upstream = tiny
    add_patch(project, upstream, project.root.parent / "work", 7, change_test=False)
    with (project.root / "forks" / "tiny.toml").open("a") as out:
        out.write(GUARD)
    before = state(project.root)

    status, _, err = run_cli(capsys, "tiny")

    assert status == 1
    assert "error: the guard tests (1 node ids) failed" in err
    assert "assert 7 == 42" in err
    assert state(project.root) == before


def test_dry_run_builds_and_checks_but_publishes_and_pins_nothing(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    before = state(project.root)

    result = released(capsys, "tiny", "--dry-run")

    assert result["status"] == "checked"
    assert state(project.root) == before
    assert not (project.root / "index").exists()
    assert (project.root / "dist" / "tiny" / "SHA256SUMS").is_file()


def test_two_clean_runs_give_identical_sha256sums(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, upstream = tiny
    add_patch(project, upstream, project.root.parent / "work", 7)
    sums = []
    for _ in range(2):
        shutil.rmtree(project.root / ".workspace", ignore_errors=True)
        shutil.rmtree(project.root / "dist", ignore_errors=True)
        released(capsys, "tiny", "--dry-run")
        sums.append((project.root / "dist" / "tiny" / "SHA256SUMS").read_bytes())
    assert sums[0] == sums[1]

    with tarfile.open(
        project.root / "dist" / "tiny" / "tiny_ext-1.0.post1.tar.gz"
    ) as t:
        members = t.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mode for m in members} <= {0o644, 0o755}


def test_pinned_rebuilds_the_pinned_release_into_an_empty_index(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, upstream = tiny
    add_patch(project, upstream, project.root.parent / "work", 7)
    first = released(capsys, "tiny")
    pinned = state(project.root)
    # A clean clone: no index, no workspace, and the series moved on since,
    # with a guard for the new patch that the pinned release never had.
    shutil.rmtree(project.root / "index")
    shutil.rmtree(project.root / ".workspace")
    add_patch(project, upstream, project.root.parent / "work", 8)
    with (project.root / "forks" / "tiny.toml").open("a") as declaration:
        declaration.write(GUARD.replace("7", "8"))

    result = released(capsys, "tiny", "--pinned")

    assert result["version"] == "1.0.post1"
    assert result["files"] == first["files"]
    assert state(project.root) == {
        k: v for k, v in state(project.root).items() if k in pinned
    } | {k: v for k, v in pinned.items() if not k.startswith("index")}


def test_pinned_rebuilds_a_release_of_an_older_recipe_with_that_recipe(
    tiny: tuple[Project, Upstream],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project, upstream = tiny
    add_patch(project, upstream, project.root.parent / "work", 7)
    # Released by a toolchain whose recipe was still 1: the wheel from the sdist.
    with monkeypatch.context() as older:
        older.setattr(build, "RECIPE", build.RECIPES[1])
        first = released(capsys, "tiny")
    record = project.root / "requirements" / "tiny-ext.provenance.json"
    assert json.loads(record.read_text())["provenance"]["recipe"]["recipe"] == 1
    shutil.rmtree(project.root / "index")
    shutil.rmtree(project.root / ".workspace")

    status, out, err = run_cli(capsys, "--json", "tiny", "--pinned")

    assert status == 0, err
    assert json.loads(out)["files"] == first["files"]
    assert "sdist, wheel" in err
    # The next release is built with today's recipe: new inputs, a new version.
    status, out, err = run_cli(capsys, "--json", "tiny")
    assert json.loads(out)["version"] == "1.0.post2"
    assert "wheel, the sdist beside it" in err


def test_pinned_refuses_a_recipe_it_does_not_know(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    released(capsys, "tiny")
    with edited_pin_record(project) as data:
        data["provenance"]["recipe"] = {"recipe": 99, "backend": "setuptools==99"}
    shutil.rmtree(project.root / "index")

    status, _, err = run_cli(capsys, "tiny", "--pinned")

    assert status == 8
    assert "requirements/tiny-ext.provenance.json: the release was built with" in err
    assert '"recipe": 99' in err
    assert "which this toolchain does not know" in err
    assert not (project.root / "index").exists()


def test_a_module_the_sdist_lacks_stops_the_release(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    # The wheel is built from the tree, not from the sdist: a module that
    # MANIFEST.in keeps out of the sdist would be lost to anyone building
    # from the sdist, so the release stops before publishing.
    project, upstream = tiny
    work = project.root.parent / "work"
    work.mkdir()
    text = make_patch(
        work / "extra",
        upstream.repo,
        {"tinylib/extra.py": "X = 1\n", "MANIFEST.in": "exclude tinylib/extra.py\n"},
        "Add an extra module",
    )
    series = project.root / "patches" / "tiny"
    (series / "extra.patch").write_text(text)
    (series / "series").write_text("extra.patch\n")
    before = state(project.root)

    status, _, err = run_cli(capsys, "tiny")

    assert status == 1
    assert "tiny_ext-1.0.post1.tar.gz lacks 1 module(s) that" in err
    assert "(tinylib/extra.py)" in err
    assert state(project.root) == before


def test_pinned_refuses_to_publish_other_hashes_than_the_pin(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    released(capsys, "tiny")
    with edited_pin_record(project) as data:
        data["files"]["tiny_ext-1.0.post1.tar.gz"] = "0" * 64
    shutil.rmtree(project.root / "index")

    status, _, err = run_cli(capsys, "tiny", "--pinned")

    assert status == 8
    assert "does not have the pinned hashes" in err
    assert f"tiny_ext-1.0.post1.tar.gz: pinned {'0' * 64}, built" in err
    assert not (project.root / "index").exists()


def test_a_file_of_the_same_name_with_other_content_is_refused(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    leftover = project.root / "index" / "tiny-ext" / "tiny_ext-1.0.post1.tar.gz"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"someone else's build")

    status, _, err = run_cli(capsys, "tiny")

    assert status == 7
    assert "tiny_ext-1.0.post1.tar.gz already exists with sha256" in err
    assert not (project.root / "requirements").exists()
    assert leftover.read_bytes() == b"someone else's build"


def test_a_second_run_at_the_same_time_stops_with_a_clear_message(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    lock = project.root / ".workspace" / ".release" / "tiny.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        status, _, err = run_cli(capsys, "tiny")

    assert status == 5
    assert "another tools/release-fork run on tiny is in progress (pid 4242" in err


def test_a_journal_left_by_a_killed_run_is_finished_by_the_next(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    transaction = Transaction(state_dir)
    transaction.put(tmp_path / "pin.txt", b"new pin\n")
    transaction.put(tmp_path / "index" / "page.html", b"new page\n")
    (tmp_path / "pin.txt").write_bytes(b"old pin\n")
    # Killed right after the journal was written: nothing moved yet.
    (state_dir / "journal.json").write_text(
        json.dumps([[str(s), str(t)] for s, t in transaction.moves])
    )

    Transaction.recover(state_dir)

    assert (tmp_path / "pin.txt").read_bytes() == b"new pin\n"
    assert (tmp_path / "index" / "page.html").read_bytes() == b"new page\n"
    assert list(state_dir.iterdir()) == []


@pytest.mark.slow
def test_killed_at_each_step_the_previous_release_stays_and_a_rerun_completes(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, upstream = tiny
    released(capsys, "tiny")
    add_patch(project, upstream, project.root.parent / "work", 7)
    before = state(project.root)

    for step in (
        "index",
        "apply",
        "source",
        "build",
        "check",
        "gate",
        "files",
        "publish",
    ):
        with subprocess.Popen(
            [sys.executable, "-m", "forkkit.commands.release_fork", "tiny"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=os.environ.copy(),
        ) as process:
            assert process.stderr is not None
            for line in process.stderr:
                if line.startswith(f"release: {step} "):
                    process.send_signal(signal.SIGKILL)
                    break
            process.wait()
        assert process.returncode == -signal.SIGKILL, f"not killed after {step}"
        assert state(project.root) == before, f"changed when killed after {step}"

    result = released(capsys, "tiny")
    assert result["version"] == "1.0.post2"
    assert '"tiny-ext==1.0.post2"' in (project.root / "pyproject.toml").read_text()


def test_a_fresh_virtualenv_installs_the_pin_by_hash_from_the_index_alone(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    project, _ = tiny
    released(capsys, "tiny")
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--index-url",
            (project.root / "index").as_uri() + "/",
            "-r",
            str(project.root / "requirements" / "tiny-ext.txt"),
        ],
        check=True,
        env=env,
    )
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import tinylib; print(tinylib.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout == "1.0.post1\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repository", "a", "--repository-url", "http://x/"], "not both"),
        (["--index-url", "http://x/simple/"], "go with --repository"),
    ],
    ids=["two-targets", "index-url-alone"],
)
def test_bad_flag_combinations_are_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        release_fork.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_release_key_names_the_file_and_the_key(
    tiny: tuple[Project, Upstream], capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = tiny
    with (project.root / "forks" / "tiny.toml").open("a") as out:
        out.write('pakage = "typo"\n')

    status, _, err = run_cli(capsys, "tiny")

    assert status == 2
    assert err.startswith("error: forks/tiny.toml: unknown key 'release.pakage'")


def test_the_import_check_names_each_problem_of_the_installed_release(
    tmp_path: Path,
) -> None:
    # A virtualenv holding what a broken release would leave: a stale
    # __version__, and upstream's own distribution installed beside it.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "tinylib").mkdir()
    (site / "tinylib" / "__init__.py").write_text('__version__ = "1.0"\n')
    (site / "tinylib" / "_provenance.json").write_text('{"version": "1.0.post1"}')
    for name, version in (("tiny_ext", "1.0.post1"), ("tinylib", "1.0")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
    wheel = tmp_path / "tiny_ext-1.0.post1-py3-none-any.whl"

    with pytest.raises(ReleaseCheckFailed) as raised:
        checks.check_import(
            venv,
            wheel,
            tmp_path,
            distribution="tiny-ext",
            version="1.0.post1",
            package="tinylib",
            upstream_project="tinylib",
        )

    message = str(raised.value)
    assert message.startswith(f"{wheel.name} installed but fails its import check")
    assert "tinylib.__version__ is '1.0'" in message
    assert "upstream tinylib is installed beside tiny-ext" in message
