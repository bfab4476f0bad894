"""The project: where declarations, series, workspaces and indexes live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from forkkit import fork as fork_module
from forkkit.errors import DeclarationError
from forkkit.fork import Fork


@dataclass(frozen=True)
class Project:
    """A checkout of this project, rooted at the folder holding ``forks/``."""

    root: Path

    @classmethod
    def locate(cls, start: Path | None = None) -> Project:
        """The project around *start* (or ``FORKKIT_ROOT``, or the cwd)."""
        if env := os.environ.get("FORKKIT_ROOT"):
            return cls(Path(env).resolve())
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / "forks").is_dir():
                return cls(folder)
        raise DeclarationError(
            f"{here}: no forks/ folder here or above; run from the project"
        )

    @property
    def forks_dir(self) -> Path:
        return self.root / "forks"

    def fork_names(self) -> list[str]:
        return sorted(p.stem for p in self.forks_dir.glob("*.toml"))

    def fork(self, name: str | None) -> Fork:
        """Load a declaration; with no name, the project's only fork."""
        names = self.fork_names()
        if name is None:
            if len(names) != 1:
                raise DeclarationError(
                    f"forks/: {len(names)} forks are declared "
                    f"({', '.join(names) or 'none'}); name the one to use"
                )
            name = names[0]
        if name not in names:
            raise DeclarationError(
                f"forks/{name}.toml: no such fork declaration; declared forks: "
                + (", ".join(names) or "none")
            )
        return fork_module.load(self.forks_dir / f"{name}.toml", self.root)

    def workspace_dir(self, fork: Fork) -> Path:
        return self.root / ".workspace" / fork.name

    def shown(self, path: Path) -> str:
        """*path* as a user reads it: relative to the project when inside it."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
