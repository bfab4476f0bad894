"""End to end: the real moto fork, from the cached moto 5.2.5 sdist."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from forkkit.commands import release_fork

ROOT = Path(__file__).resolve().parents[2]
PROXY_KEYS = {"fork", "distribution", "version", "upstream", "base", "patches"}


@pytest.mark.moto_sdist
@pytest.mark.slow
def test_moto_ext_is_released_to_the_local_index_pinned_and_then_left_alone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("forks", "patches"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy2(ROOT / "pyproject.toml", project / "pyproject.toml")
    monkeypatch.setenv("FORKKIT_ROOT", str(project))
    monkeypatch.delenv("FORKKIT_CACHE", raising=False)  # the machine's sdist cache

    assert release_fork.main(["moto", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    version = result["version"]
    assert version.startswith("5.2.5.post")
    wheel = project / "index" / "moto-ext" / f"moto_ext-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        record = json.loads(archive.read("moto/_provenance.json"))
    assert set(record) >= PROXY_KEYS
    assert record["distribution"] == "moto-ext"
    assert record["base"]["version"] == "5.2.5"
    assert all(
        set(p) >= {"file", "subject", "upstream_status", "sha256"}
        for p in record["patches"]
    )
    pyproject = (project / "pyproject.toml").read_text()
    assert f'"moto-ext[server]=={version}"' in pyproject

    started = time.monotonic()
    assert release_fork.main(["moto"]) == 0
    assert time.monotonic() - started < 3
    assert "nothing to do" in capsys.readouterr().err
