"""The real thing: a small moto series carried from 5.2.4 to 5.2.5.

Both release sdists come from the package index (PyPI) and are cached in
``FORKKIT_CACHE`` (default ``~/.cache/forkkit``), so only the first run
downloads them. Only the two patched files are unpacked to write the series.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from forkkit import index
from forkkit.commands import sync_upstream
from forkkit.report import EXIT_UPDATED
from tests.forkkit.upstreams import git, make_patch

PYPI = "https://pypi.org/simple/"
SHA_5_2_5 = "391857257d5dac144334013c2c10e599def5f0562f553e979160140bd7bd9cf6"
SETTINGS = "moto/settings.py"


@pytest.mark.moto_sdist
@pytest.mark.slow
def test_a_moto_series_is_carried_from_5_2_4_to_5_2_5_through_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = index.find_sdist(PYPI, "moto", "5.2.4")
    sdist = index.fetch_sdist(release, release.sha256)
    tree = tmp_path / "moto-5.2.4"
    with tarfile.open(sdist) as tar:
        member = tar.getmember(f"moto-5.2.4/{SETTINGS}")
        source = tar.extractfile(member)
        assert source is not None
        (tree / "moto").mkdir(parents=True)
        (tree / SETTINGS).write_bytes(source.read())
    settings = (tree / SETTINGS).read_text()

    root = tmp_path / "project"
    series = root / "patches" / "moto"
    series.mkdir(parents=True)
    (root / "forks").mkdir()
    (root / "forks" / "moto.toml").write_text(
        'name = "moto"\ndistribution = "moto-ext"\nseries = "patches/moto"\n\n'
        f'[upstream]\nsource = "index"\nproject = "moto"\nindex-url = "{PYPI}"\n\n'
        f'[base]\nversion = "5.2.4"\nsha256 = "{release.sha256}"\n\n'
        '[version]\nscheme = "post"\n'
    )
    patches = {
        # Upstream left these lines alone: the patch applies where it was.
        "0001-acm-wait.patch": (
            settings.replace(
                '"MOTO_ACM_VALIDATION_WAIT", "60"', '"MOTO_ACM_VALIDATION_WAIT", "0"'
            ),
            "Validate ACM certificates at once",
        ),
        # Upstream added a function just above: only the context moved.
        "0002-no-default-amis.patch": (
            settings.replace(
                '"MOTO_EC2_LOAD_DEFAULT_AMIS", "true").lower() != "false"',
                '"MOTO_EC2_LOAD_DEFAULT_AMIS", "false").lower() != "false"',
            ),
            "Load no default AMIs unless asked",
        ),
    }
    for name, (text, subject) in patches.items():
        assert text != settings
        mail = make_patch(tmp_path / "work", tree, {SETTINGS: text}, subject)
        (series / name).write_text(mail)
    (series / "series").write_text("# moto\n" + "".join(f"{n}\n" for n in patches))
    (root / ".gitignore").write_text("/.workspace/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "moto series on 5.2.4")
    monkeypatch.setenv("FORKKIT_ROOT", str(root))
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)

    assert sync_upstream.main(["moto", "--to", "5.2.5"]) == EXIT_UPDATED

    report = json.loads(
        (root / ".workspace" / "reports" / "sync-upstream-moto.json").read_text()
    )
    assert report["new_base"] == {"version": "5.2.5", "hash": SHA_5_2_5}
    assert {p["file"]: p["class"] for p in report["patches"]} == {
        "0001-acm-wait.patch": "applied",
        "0002-no-default-amis.patch": "applied",
    }
    declaration = (root / "forks" / "moto.toml").read_text()
    assert f'sha256 = "{SHA_5_2_5}"' in declaration
    assert 'version = "5.2.5"' in declaration
    # 0002's hunk header names the function upstream added above it.
    assert report["series_changes"]["rewritten"] == ["0002-no-default-amis.patch"]
    assert report["series_changes"]["kept"] == ["0001-acm-wait.patch"]
    assert git(root, "status", "--porcelain").split() == [
        "M",
        "forks/moto.toml",
        "M",
        "patches/moto/0002-no-default-amis.patch",
    ]
