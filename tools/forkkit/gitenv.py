"""Running git the same way on every machine.

The user's and the system's git configuration are ignored, identities and
dates are fixed by the caller, and messages are in English so that they can
be parsed. Everything goes through GitPython's command wrapper.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import git

from forkkit.errors import ForkError

#: Environment every git process of the toolchain runs with.
ISOLATED_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "true",
    "LC_ALL": "C",
    "LANGUAGE": "C",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
}

#: Who commits in a workspace. Fixed, so that commit ids depend on inputs only.
COMMITTER = {
    "GIT_COMMITTER_NAME": "forkkit",
    "GIT_COMMITTER_EMAIL": "forkkit@localhost.invalid",
}

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (``https://user:token@host``)."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def open_repo(path: Path) -> git.Repo:
    """Open the repository at *path* with the isolated environment set."""
    repo = git.Repo(path)
    repo.git.update_environment(**ISOLATED_ENV)
    return repo


def init_repo(path: Path) -> git.Repo:
    """Create a repository at *path* whose behaviour does not depend on config."""
    path.mkdir(parents=True, exist_ok=True)
    git.Git(str(path)).execute(
        ["git", "init", "--quiet", "--initial-branch=series", str(path)],
        env=ISOLATED_ENV,
    )
    repo = open_repo(path)
    settings = {
        "core.autocrlf": "false",
        "core.filemode": "true",
        "core.quotepath": "false",
        "gc.auto": "0",
        "am.keepcr": "false",
        "rerere.enabled": "true",
        "rerere.autoupdate": "true",
        "user.name": COMMITTER["GIT_COMMITTER_NAME"],
        "user.email": COMMITTER["GIT_COMMITTER_EMAIL"],
    }
    for key, value in settings.items():
        repo.git.config(key, value)

    # Import trees byte for byte, whatever .gitattributes upstream ships.
    info = Path(repo.git_dir) / "info"
    info.mkdir(exist_ok=True)
    (info / "attributes").write_text("* -text -eol -ident -filter\n")
    return repo


def run(repo: git.Repo, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``git ARGS`` in *repo* and return its stdout, stripped at the end.

    Raises ``GitFailed`` with the command and its output when git fails.
    """
    status, out, err = run_status(repo, *args, env=env)
    if status != 0:
        raise GitFailed(list(args), status, out, err)
    return out


def run_status(
    repo: git.Repo, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``git ARGS`` in *repo*; return exit status, stdout and stderr."""
    kwargs: dict[str, Any] = {
        "with_extended_output": True,
        "with_exceptions": False,
        "env": {**ISOLATED_ENV, **COMMITTER, **(env or {})},
        "strip_newline_in_stdout": False,
    }
    status, out, err = repo.git.execute(["git", *args], **kwargs)
    return int(status), str(out), str(err)


class GitFailed(ForkError):
    """A git command failed in a way the toolchain did not expect."""

    def __init__(self, args: list[str], status: int, out: str, err: str) -> None:
        self.args_ = args
        self.status = status
        self.out = out
        self.err = err
        detail = redact((err or out).strip().splitlines()[-1] if (err or out) else "")
        super().__init__(
            f"git {redact(' '.join(args))} failed with status {status}: {detail}"
        )
