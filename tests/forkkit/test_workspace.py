"""The workspace: imports, apply and export, as a maintainer uses them."""

from __future__ import annotations

import socket
import tarfile
from pathlib import Path

import pytest

from forkkit.commands import patches
from forkkit.project import Project
from forkkit.workspace import Workspace
from tests.forkkit.conftest import CORE, snapshot
from tests.forkkit.test_series import add_patch, set_series
from tests.forkkit.upstreams import Upstream, git, write_declaration


def workspace(root: Path, path: Path | None = None) -> Workspace:
    project = Project(root)
    return Workspace(project, project.fork("tiny"), path)


def two_patches(root: Path, upstream: Upstream) -> None:
    add_patch(root, upstream, "three.patch", subject="core: return 33")
    add_patch(
        root,
        upstream,
        "readme.patch",
        subject="readme: say it is a fork",
        changes={"README.md": "Tiny library, patched.\n"},
    )
    set_series(root, "# Our changes.", "three.patch", "readme.patch")


def test_apply_builds_one_commit_per_patch_on_the_upstream_tag(
    declared: Path, upstream: Upstream
) -> None:
    two_patches(declared, upstream)

    assert patches.main(["apply", "tiny"]) == 0

    ws = workspace(declared)
    subjects = ws.git("log", "--format=%s", "refs/tags/upstream/1.0..HEAD")
    assert subjects.splitlines() == ["readme: say it is a fork", "core: return 33"]
    assert "return 33" in (ws.path / "tinylib" / "core.py").read_text()
    assert ws.git("rev-parse", "--abbrev-ref", "HEAD") == "series"
    assert ws.rev("upstream") == ws.rev("refs/tags/upstream/1.0")


def test_apply_then_export_changes_no_byte_twice_in_a_row(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    two_patches(declared, upstream)
    before = snapshot(declared)

    for _ in range(2):
        assert patches.main(["apply", "tiny"]) == 0
        assert patches.main(["export", "tiny"]) == 0
        assert snapshot(declared) == before
    assert "the series is unchanged" in capsys.readouterr().err
    assert patches.main(["check", "tiny"]) == 0


def test_two_workspaces_built_from_scratch_have_the_same_commit_ids(
    declared: Path, upstream: Upstream, tmp_path: Path
) -> None:
    two_patches(declared, upstream)
    _, loaded = load(declared)
    first = workspace(declared, tmp_path / "one").apply(loaded)
    second = workspace(declared, tmp_path / "two").apply(loaded)

    assert [o.commit for o in first] == [o.commit for o in second]
    assert [o.outcome for o in first] == ["applied", "applied"]


def test_git_source_fetches_the_tag_with_its_history_deterministically(
    project_root: Path, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({"tinylib/extra.py": "X = 1\n"}, "Add extra")
    upstream.release("1.1", sdist=False)
    write_declaration(project_root, upstream, version="1.1", source="git")
    two_patches(project_root, upstream)
    _, loaded = load(project_root)

    first = workspace(project_root, tmp_path / "one").apply(loaded)
    second = workspace(project_root, tmp_path / "two").apply(loaded)

    assert [o.commit for o in first] == [o.commit for o in second]
    ws = workspace(project_root, tmp_path / "one")
    history = ws.git("log", "--format=%s", "refs/tags/upstream/1.1")
    assert history.splitlines() == ["Add extra", "Start tinylib"]
    assert (
        ws.rev("refs/tags/upstream/1.1^{commit}")
        == git(upstream.repo, "rev-parse", "1.1^{commit}").strip()
    )


def test_export_writes_new_commits_and_keeps_patches_whose_context_moved(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    two_patches(declared, upstream)
    three = (declared / "patches/tiny/three.patch").read_bytes()
    assert patches.main(["apply", "tiny"]) == 0
    ws = workspace(declared)

    # Edit the first patch so that the second one's context moves, and add one.
    ws.git("checkout", "-q", "HEAD~1")
    core = ws.path / "tinylib" / "core.py"
    core.write_text("# header\n" + core.read_text())
    ws.git("commit", "-q", "-a", "--amend", "--no-edit")
    ws.git("cherry-pick", "series")
    (ws.path / "NEW.txt").write_text("new\n")
    ws.git("add", "NEW.txt")
    ws.git("commit", "-q", "-m", "docs: add NEW\n\nNeeded.\n\nUpstream-Status: Pending")
    ws.git("checkout", "-q", "-B", "series")

    assert patches.main(["export", "tiny"]) == 0

    folder = declared / "patches" / "tiny"
    assert (folder / "three.patch").read_bytes() != three
    assert (folder / "series").read_text().splitlines() == [
        "# Our changes.",
        "three.patch",
        "readme.patch",
        "docs-add-new.patch",
    ]
    assert "Upstream-Status: Pending" in (folder / "docs-add-new.patch").read_text()
    err = capsys.readouterr().err
    assert "wrote    three.patch" in err and "wrote    docs-add-new.patch" in err
    assert patches.main(["check", "tiny"]) == 0


def test_export_keeps_the_bytes_of_a_patch_whose_context_only_moved(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    add_patch(declared, upstream, "three.patch", subject="core: return 33")
    set_series(declared, "three.patch")
    three = (declared / "patches/tiny/three.patch").read_bytes()
    assert patches.main(["apply", "tiny"]) == 0
    ws = workspace(declared)

    # Insert a commit below the patch that moves its hunk by one line.
    ws.git("checkout", "-q", "refs/forkkit/base")
    core = ws.path / "tinylib" / "core.py"
    core.write_text("# header\n" + core.read_text())
    ws.git(
        "commit",
        "-q",
        "-a",
        "-m",
        "core: header\n\nNeeded.\n\nUpstream-Status: Pending",
    )
    ws.git("cherry-pick", "series")
    ws.git("checkout", "-q", "-B", "series")

    assert patches.main(["export", "tiny"]) == 0

    assert (declared / "patches/tiny/three.patch").read_bytes() == three
    assert "kept     three.patch (only its context moved)" in capsys.readouterr().err


def test_apply_refuses_to_throw_away_unexported_commits(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    two_patches(declared, upstream)
    assert patches.main(["apply", "tiny"]) == 0
    ws = workspace(declared)
    (ws.path / "NEW.txt").write_text("new\n")
    ws.git("add", "NEW.txt")
    ws.git("commit", "-q", "-m", "docs: add NEW\n\nNeeded.\n\nUpstream-Status: Pending")
    head = ws.rev("HEAD")

    assert patches.main(["apply", "tiny"]) == 5
    err = capsys.readouterr().err
    assert "never exported (newest: " in err and "docs: add NEW" in err
    assert ws.rev("HEAD") == head

    assert patches.main(["apply", "--force", "tiny"]) == 0
    assert ws.rev("HEAD") != head


def test_apply_refuses_uncommitted_changes(
    declared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert patches.main(["apply", "tiny"]) == 0
    ws = workspace(declared)
    (ws.path / "README.md").write_text("edited\n")

    assert patches.main(["apply", "tiny"]) == 5
    assert "the work tree has uncommitted changes" in capsys.readouterr().err
    assert (ws.path / "README.md").read_text() == "edited\n"


def test_conflict_names_patch_file_and_hunk_and_leaves_it_to_resolve(
    declared: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    add_patch(declared, upstream, "three.patch", subject="core: return 33")
    set_series(declared, "three.patch")
    # The same lines, changed differently by a patch that comes first.
    add_patch(
        declared,
        upstream,
        "other.patch",
        subject="core: return 30",
        changes={"tinylib/core.py": CORE.replace("return 3\n", "return 30\n")},
    )
    set_series(declared, "other.patch", "three.patch")
    before = snapshot(declared)

    assert patches.main(["apply", "tiny"]) == 3

    err = capsys.readouterr().err
    assert "error: patch three.patch (core: return 33) does not apply" in err
    assert "tinylib/core.py: hunk #1 @@ -7,7 +7,7 @@ def function_2():" in err
    assert "tinylib/core.py: conflict markers at line 10" in err
    assert workspace(declared).am_in_progress
    assert snapshot(declared) == before


def test_a_patch_made_for_other_context_applies_with_a_3way_merge(
    declared: Path, upstream: Upstream, tmp_path: Path
) -> None:
    # Made against a tree where the function above was different.
    other_base = tmp_path / "other-base"
    git(upstream.repo, "worktree", "add", "-q", str(other_base), "1.0")
    (other_base / "tinylib" / "core.py").write_text(
        CORE.replace("    return 2\n\n", "    return 2\n# two\n")
    )
    text = add_patch_from(declared, other_base, "three.patch")
    assert "index " in text
    git(other_base, "add", "-A")
    git(other_base, "commit", "-q", "-m", "context")
    # Make the blob of that context known to the workspace, as sync does.
    set_series(declared, "three.patch")
    ws = workspace(declared)
    ws.import_release("1.0")
    ws.git("fetch", "-q", str(upstream.repo), "HEAD")
    ws.git("fetch", "-q", str(other_base), "HEAD")

    outcomes = ws.apply(load(declared)[1])

    assert [o.outcome for o in outcomes] == ["applied-3way"]
    assert "return 33" in (ws.path / "tinylib" / "core.py").read_text()


def add_patch_from(root: Path, base_tree: Path, name: str) -> str:
    from tests.forkkit.upstreams import make_patch

    core = (base_tree / "tinylib" / "core.py").read_text()
    text = make_patch(
        root.parent / "patch-work",
        base_tree,
        {"tinylib/core.py": core.replace("return 3\n", "return 33\n")},
        "core: return 33",
    )
    (root / "patches" / "tiny" / name).write_text(text)
    return text


def load(root: Path):  # type: ignore[no-untyped-def]
    from forkkit.workspace import load_series

    project = Project(root)
    return load_series(project, project.fork("tiny"))


def test_sdist_with_another_hash_than_declared_is_refused(
    project_root: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    write_declaration(project_root, upstream, version="1.0", sha256="0" * 64)
    before = snapshot(project_root)

    assert patches.main(["apply", "tiny"]) == 4

    err = capsys.readouterr().err
    assert "tinylib-1.0.tar.gz: the index lists sha256" in err
    assert "but the declaration says " + "0" * 64 in err
    assert snapshot(project_root) == before


def test_version_missing_from_the_index(
    project_root: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    write_declaration(project_root, upstream, version="9.9")

    assert patches.main(["apply", "tiny"]) == 4
    assert "has no sdist of tinylib 9.9 (newest there: 1.0)" in capsys.readouterr().err


def test_tag_missing_from_the_git_repository(
    project_root: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    write_declaration(project_root, upstream, version="9.9", source="git")

    assert patches.main(["apply", "tiny"]) == 4
    assert f"{upstream.repo} has no tag 9.9 (for version 9.9)" in (
        capsys.readouterr().err
    )


def test_unreachable_git_source(
    project_root: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_declaration(project_root, upstream, version="1.0", source="git")
    path.write_text(path.read_text().replace(str(upstream.repo), "/nonexistent/repo"))

    assert patches.main(["apply", "tiny"]) == 4
    assert "/nonexistent/repo: git fetch failed" in capsys.readouterr().err


def test_unreachable_index_hides_credentials(
    project_root: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write_declaration(project_root, upstream, version="1.0")
    path.write_text(
        path.read_text().replace(
            upstream.index_url, f"http://user:s3cret@127.0.0.1:{port}/simple/"
        )
    )

    assert patches.main(["apply", "tiny"]) == 4
    err = capsys.readouterr().err
    assert f"http://***@127.0.0.1:{port}/simple/tinylib/: the package index did " in err
    assert "s3cret" not in err


@pytest.mark.parametrize(
    ("member", "message"),
    [
        pytest.param(
            ("../evil.py", tarfile.REGTYPE), "would be written outside", id="dotdot"
        ),
        pytest.param(("tinylib-1.1/link", tarfile.SYMTYPE), "is a link", id="symlink"),
        pytest.param(("tinylib-1.1/dev", tarfile.CHRTYPE), "device", id="device"),
        pytest.param(
            ("tinylib-1.1/.git/config", tarfile.REGTYPE), "git metadata", id="git"
        ),
    ],
)
def test_unsafe_sdist_members_refuse_the_whole_archive(
    project_root: Path,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
    member: tuple[str, bytes],
    message: str,
) -> None:
    info = tarfile.TarInfo(member[0])
    info.type = member[1]
    info.linkname = "/etc/passwd" if info.issym() else ""
    info.size = 1 if info.isfile() else 0
    upstream.commit({"x.txt": "x\n"}, "x")
    upstream.release("1.1", sdist=False)
    upstream.publish_sdist("1.1", extra=[info])
    write_declaration(project_root, upstream, version="1.1")

    assert patches.main(["apply", "tiny"]) == 4
    err = capsys.readouterr().err
    assert f"tinylib-1.1.tar.gz: member {member[0]!r}" in err and message in err
    ws = workspace(project_root)
    assert ws.rev("refs/tags/upstream/1.1") is None


def test_first_import_records_the_sdist_hash_in_the_declaration(
    project_root: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_declaration(project_root, upstream, version="1.0")
    assert "sha256" not in path.read_text()

    assert patches.main(["apply", "tiny"]) == 0

    assert f'sha256 = "{upstream.sha256}"' in path.read_text()
    assert Project(project_root).fork("tiny").base.sha256 == upstream.sha256
    assert "recorded base.sha256 = " in capsys.readouterr().err
