"""Small upstream projects built in temporary folders, for exact, fast tests.

``Upstream`` is a real git repository with release tags; each release can
also be published as an sdist into a PEP 503 ``file://`` package index, so
both upstream sources of a fork declaration can be exercised without network.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from forkkit.gitenv import ISOLATED_ENV
from forkkit.workspace import FORMAT_PATCH

AUTHOR = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@upstream.invalid",
    "GIT_COMMITTER_NAME": "Upstream Dev",
    "GIT_COMMITTER_EMAIL": "dev@upstream.invalid",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in *cwd* with the user's config ignored; return stdout."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**ISOLATED_ENV, **AUTHOR, "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@dataclass
class Upstream:
    """A tiny upstream library with a git history and an sdist index."""

    root: Path
    project: str = "tinylib"
    clock: int = 1_700_000_000
    index: Path = field(init=False)
    #: The sha256 of the first release's sdist, once published.
    sha256: str | None = None

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        self.index = self.root / "index"
        self.repo.mkdir(parents=True)
        self.index.mkdir()
        git(self.repo, "init", "-q", "-b", "main")

    @property
    def index_url(self) -> str:
        return self.index.as_uri()

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or delete, for None) *files* and commit; return the id."""
        for name, text in files.items():
            path = self.repo / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.repo, "add", "-A")
        self.clock += 3600
        stamp = f"@{self.clock} +0000"
        git(
            self.repo,
            "commit",
            "-q",
            "-m",
            message,
            env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )
        return git(self.repo, "rev-parse", "HEAD").strip()

    def release(self, version: str, *, sdist: bool = True) -> str | None:
        """Tag HEAD as *version* and publish its sdist; return the sha256."""
        git(self.repo, "tag", "-a", version, "-m", f"Release {version}")
        return self.publish_sdist(version) if sdist else None

    def publish_sdist(
        self, version: str, extra: list[tarfile.TarInfo] | None = None
    ) -> str:
        """Build ``<project>-<version>.tar.gz`` from the tag into the index."""
        top = f"{self.project}-{version}"
        files = git(self.repo, "ls-tree", "-r", "--name-only", version).splitlines()
        buffer = io.BytesIO()
        with tarfile.open(
            fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT
        ) as tar:
            folder = tarfile.TarInfo(top)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, self.clock
            tar.addfile(folder)
            for name in files:
                data = subprocess.run(
                    ["git", "show", f"{version}:{name}"],
                    cwd=self.repo,
                    capture_output=True,
                    check=True,
                ).stdout
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, self.clock
                tar.addfile(info, io.BytesIO(data))
            for info in extra or []:
                tar.addfile(
                    info, io.BytesIO(b"x" * info.size) if info.isfile() else None
                )
        data = buffer.getvalue()
        project_dir = self.index / self.project
        project_dir.mkdir(exist_ok=True)
        (project_dir / f"{top}.tar.gz").write_bytes(data)
        self._write_index_page()
        return hashlib.sha256(data).hexdigest()

    def _write_index_page(self) -> None:
        project_dir = self.index / self.project
        links = []
        for path in sorted(project_dir.glob("*.tar.gz")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            links.append(f'<a href="{path.name}#sha256={digest}">{path.name}</a>')
        (project_dir / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )


def write_declaration(
    project_root: Path,
    upstream: Upstream,
    *,
    version: str,
    sha256: str | None = None,
    source: str = "index",
    name: str = "tiny",
    extra: str = "",
) -> Path:
    """Write ``forks/<name>.toml`` for *upstream* and an empty series."""
    (project_root / "forks").mkdir(parents=True, exist_ok=True)
    series = project_root / "patches" / name
    series.mkdir(parents=True, exist_ok=True)
    if not (series / "series").exists():
        (series / "series").write_text(f"# The {name} series.\n")
    sha_line = f'sha256 = "{sha256}"\n' if sha256 else ""
    path = project_root / "forks" / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        f'distribution = "{name}-ext"\n'
        f'series = "patches/{name}"\n\n'
        "[upstream]\n"
        f'source = "{source}"\n'
        f'project = "{upstream.project}"\n'
        f'index-url = "{upstream.index_url}"\n'
        f'git-url = "{upstream.repo}"\n'
        'tag-pattern = "{version}"\n\n'
        "[base]\n"
        f'version = "{version}"\n'
        f"{sha_line}\n"
        "[version]\n"
        'scheme = "post"\n' + extra
    )
    return path


def make_patch(
    work: Path,
    base_tree: Path,
    changes: dict[str, str | None],
    subject: str,
    *,
    body: str = "Because the tests need a change.",
    status: str = "Pending",
    date: int = 1_750_000_000,
) -> str:
    """A format-patch mail of *changes* against the files in *base_tree*."""
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["cp", "-a", str(base_tree), str(work)], check=True)
    subprocess.run(["rm", "-rf", str(work / ".git")], check=True)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base", env={"GIT_AUTHOR_DATE": f"@{date} +0000"})
    for name, text in changes.items():
        if text is None:
            (work / name).unlink()
        else:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
    git(work, "add", "-A")
    trailer = f"Upstream-Status: {status}" if status else ""
    message = f"{subject}\n\n{body}\n\n{trailer}".rstrip() + "\n"
    git(
        work,
        "commit",
        "-q",
        "-m",
        message,
        env={
            "GIT_AUTHOR_DATE": f"@{date} +0000",
            "GIT_COMMITTER_DATE": f"@{date} +0000",
        },
    )
    return git(work, *FORMAT_PATCH, "-1", "HEAD")
