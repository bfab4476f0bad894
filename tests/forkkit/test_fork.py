"""Fork declarations: every bad key or value is named with its file."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkkit.commands import patches
from tests.forkkit.conftest import snapshot


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            'scheme = "post"\n',
            'scheme = "post"\ncolour = "blue"\n',
            "forks/tiny.toml: unknown key 'version.colour'",
            id="unknown-key",
        ),
        pytest.param(
            'distribution = "tiny-ext"\n',
            "",
            "forks/tiny.toml: key 'distribution' is missing",
            id="missing-key",
        ),
        pytest.param(
            'source = "index"',
            'source = "ftp"',
            "forks/tiny.toml: key 'upstream.source' is 'ftp'",
            id="bad-source",
        ),
        pytest.param(
            'version = "1.0"',
            'version = "one"',
            "forks/tiny.toml: key 'base.version' is 'one', which is not a PEP 440",
            id="bad-version",
        ),
        pytest.param(
            'version = "1.0"',
            "version = 1.0",
            "forks/tiny.toml: key 'base.version' must be a str",
            id="wrong-type",
        ),
        pytest.param(
            'tag-pattern = "{version}"',
            'tag-pattern = "v{major}"',
            "forks/tiny.toml: key 'upstream.tag-pattern' is 'v{major}'",
            id="bad-tag-pattern",
        ),
        pytest.param(
            'name = "tiny"',
            'name = "other"',
            "key 'name' is 'other' but the file is named tiny.toml",
            id="name-mismatch",
        ),
        pytest.param(
            "[base]",
            "[base\n",
            "forks/tiny.toml: not valid TOML",
            id="not-toml",
        ),
    ],
)
def test_bad_declaration_is_named_and_nothing_changes(
    declared: Path,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    message: str,
) -> None:
    edit(declared / "forks" / "tiny.toml", old, new)
    before = snapshot(declared)

    assert patches.main(["apply", "tiny"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(declared) == before
    assert not (declared / ".workspace").exists()


def test_unknown_fork_lists_the_declared_ones(
    declared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert patches.main(["list", "nope"]) == 2
    assert "forks/nope.toml: no such fork declaration; declared forks: tiny" in (
        capsys.readouterr().err
    )
