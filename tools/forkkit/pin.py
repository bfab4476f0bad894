"""The pin: the application's exact requirement on one release, with hashes.

Three files hold it, and they change together:

* ``pyproject.toml``: ``<distribution>[extras]==<version>`` in
  ``[project].dependencies`` (edited with tomlkit, so its formatting stays);
* ``requirements/<distribution>.txt``: the same requirement with the wheel's
  and the sdist's sha256, for ``pip install --require-hashes`` from the fork's
  index alone;
* ``requirements/<distribution>.provenance.json``: the release's provenance
  and file hashes, from which ``tools/release-fork --pinned`` rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from forkkit.errors import DeclarationError


@dataclass(frozen=True)
class Pin:
    """One pinned release."""

    distribution: str
    version: str
    files: dict[str, str]  # file name -> sha256
    provenance: dict[str, Any]

    @property
    def inputs(self) -> str:
        return str(self.provenance.get("inputs", ""))


@dataclass(frozen=True)
class PinFiles:
    """Where a fork's pin lives in the project."""

    root: Path
    pyproject: Path
    requirements: Path

    @property
    def record(self) -> Path:
        return self.requirements.with_name(
            self.requirements.name.removesuffix(".txt") + ".provenance.json"
        )

    def read(self) -> Pin | None:
        """The current pin, or None before the first release."""
        if not self.record.is_file():
            return None
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
            return Pin(
                distribution=data["distribution"],
                version=data["version"],
                files=dict(data["files"]),
                provenance=dict(data["provenance"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DeclarationError(
                f"{self._shown(self.record)}: not a pin record written by "
                f"tools/release-fork ({exc}); restore it from git"
            ) from exc

    def render(self, pin: Pin, extras: tuple[str, ...]) -> dict[Path, bytes]:
        """The new content of every pin file for *pin*."""
        record = {
            "distribution": pin.distribution,
            "version": pin.version,
            "files": dict(sorted(pin.files.items())),
            "provenance": pin.provenance,
        }
        return {
            self.pyproject: self._pyproject(pin, extras).encode(),
            self.requirements: self._requirements(pin, extras).encode(),
            self.record: (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
        }

    def _pyproject(self, pin: Pin, extras: tuple[str, ...]) -> str:
        shown = self._shown(self.pyproject)
        if not self.pyproject.is_file():
            raise DeclarationError(
                f"{shown}: no such file; the pin goes into its [project] "
                "dependencies (set release.pyproject in the fork declaration)"
            )
        document = tomlkit.parse(self.pyproject.read_text(encoding="utf-8"))
        project = document.get("project")
        if not isinstance(project, dict):
            raise DeclarationError(f"{shown}: no [project] table to pin the fork in")
        dependencies = project.setdefault("dependencies", tomlkit.array())
        wanted = requirement_text(pin.distribution, pin.version, extras)
        for number, existing in enumerate(list(dependencies)):
            try:
                name = Requirement(str(existing)).name
            except InvalidRequirement:
                continue
            if canonicalize_name(name) == canonicalize_name(pin.distribution):
                dependencies[number] = wanted
                break
        else:
            dependencies.append(wanted)
        return tomlkit.dumps(document)

    def _requirements(self, pin: Pin, extras: tuple[str, ...]) -> str:
        hashes = " \\\n".join(
            f"    --hash=sha256:{digest}" for _, digest in sorted(pin.files.items())
        )
        return (
            "# The pinned fork release, written by tools/release-fork: do not edit.\n"
            "# Install it from the fork's index only, never with --extra-index-url\n"
            "# (the public index has a foreign distribution of the same name):\n"
            "#   pip install --index-url file://$PWD/index/ --no-deps "
            f"--require-hashes -r {self._shown(self.requirements)}\n"
            f"{requirement_text(pin.distribution, pin.version, extras)} \\\n"
            f"{hashes}\n"
        )

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def requirement_text(distribution: str, version: str, extras: tuple[str, ...]) -> str:
    """``name[extras]==version``."""
    joined = f"[{','.join(sorted(extras))}]" if extras else ""
    return f"{distribution}{joined}=={version}"
