"""Checks a built release passes before it is published.

* ``twine check --strict`` on both files;
* the wheel's and the sdist's metadata name the distribution and the version,
  both carry the provenance record, and the sdist holds every module the
  wheel ships (a wheel built from the sdist would have the same code);
* the wheel installs into a fresh virtualenv with ``--require-hashes`` and
  imports there: ``__version__`` is the release's version, the package comes
  from the wheel, and upstream's own distribution is not installed beside it;
* the upstream tests that guard the patches pass against the installed wheel.

The release's dependencies live in a virtualenv cached per set of
requirements and joined to the fresh one by a ``.pth`` file: every check
installs the release itself afresh without downloading its dependencies again.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from forkkit.build import (
    PROVENANCE_FILE,
    Artifacts,
    clean_environment,
    run_quiet,
    sha256_file,
)
from forkkit.errors import ReleaseCheckFailed
from forkkit.index import cache_dir

log = logging.getLogger(__name__)

_PYTEST_CONFIG = ("pyproject.toml", "setup.cfg", "pytest.ini", "tox.ini", "conftest.py")


def twine_check(artifacts: Artifacts) -> None:
    """``twine check --strict`` on both files."""
    run_quiet(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            *map(str, artifacts.files),
        ],
        what="twine check --strict",
        error=ReleaseCheckFailed,
    )


def check_files(
    artifacts: Artifacts, distribution: str, version: str, package: str
) -> None:
    """Metadata and contents of both files."""
    with zipfile.ZipFile(artifacts.wheel) as wheel:
        names = wheel.namelist()
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if meta_name is None:
            raise ReleaseCheckFailed(f"{artifacts.wheel.name}: no METADATA in it")
        _check_metadata(
            artifacts.wheel.name, wheel.read(meta_name), distribution, version
        )
        if f"{package}/{PROVENANCE_FILE}" not in names:
            raise ReleaseCheckFailed(
                f"{artifacts.wheel.name}: {package}/{PROVENANCE_FILE} is missing; the "
                "base's packaging does not ship package data (check its setup.cfg)"
            )
    with tarfile.open(artifacts.sdist, "r:gz") as sdist:
        members = {m.name: m for m in sdist.getmembers()}
        top = artifacts.sdist.name.removesuffix(".tar.gz")
        info = members.get(f"{top}/PKG-INFO")
        stream = sdist.extractfile(info) if info else None
        if stream is None:
            raise ReleaseCheckFailed(f"{artifacts.sdist.name}: no {top}/PKG-INFO")
        _check_metadata(artifacts.sdist.name, stream.read(), distribution, version)
        if f"{top}/{package}/{PROVENANCE_FILE}" not in members:
            raise ReleaseCheckFailed(
                f"{artifacts.sdist.name}: {package}/{PROVENANCE_FILE} is missing"
            )
    missing = _modules_missing_from_sdist(names, members, top)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ReleaseCheckFailed(
            f"{artifacts.sdist.name} lacks {len(missing)} module(s) that "
            f"{artifacts.wheel.name} ships ({shown}), so a wheel built from the "
            "sdist would differ; include them in the base's MANIFEST.in or "
            "packaging, with a patch"
        )


def _modules_missing_from_sdist(
    wheel_names: list[str], sdist_names: Iterable[str], top: str
) -> list[str]:
    """The wheel's Python modules that no file of the sdist provides.

    A module ``pkg/mod.py`` is provided by ``<top>/pkg/mod.py`` or by the same
    path under a source folder (``<top>/src/pkg/mod.py``).
    """
    provided: set[str] = set()
    for name in sdist_names:
        below = name.removeprefix(f"{top}/").split("/")
        provided.update("/".join(below[i:]) for i in range(len(below)))
    return [
        module
        for module in wheel_names
        if module.endswith(".py")
        and not module.split("/", 1)[0].endswith((".dist-info", ".data"))
        and module not in provided
    ]


def _check_metadata(shown: str, raw: bytes, distribution: str, version: str) -> None:
    message = email.parser.BytesParser().parsebytes(raw, headersonly=True)
    found = (message.get("Name"), message.get("Version"))
    if found != (distribution, version):
        raise ReleaseCheckFailed(
            f"{shown}: metadata says {found[0]} {found[1]}, expected "
            f"{distribution} {version}"
        )


def requirements_of(wheel: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """The wheel's requirements with *extras*, as pip reads them."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.BytesParser().parsebytes(archive.read(name))
    environment: dict[str, str] = {
        key: str(value) for key, value in default_environment().items()
    }
    wanted = []
    for text in message.get_all("Requires-Dist") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
        ):
            requirement.marker = None
            wanted.append(str(requirement))
    return sorted(wanted)


def dependency_env(requirements: list[str], index_url: str) -> Path | None:
    """A cached virtualenv with *requirements* installed; None when empty."""
    if not requirements:
        return None
    key = hashlib.sha256(
        json.dumps([sys.version_info[:2], index_url, requirements]).encode()
    ).hexdigest()[:24]
    env_dir = cache_dir() / "envs" / key
    if (env_dir / ".complete").is_file():
        return env_dir

    log.info("  installing %d dependencies once into %s", len(requirements), env_dir)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=env_dir.parent))
    try:
        _venv(scratch)
        run_quiet(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(scratch / "bin" / "python"),
                "install",
                "--quiet",
                "--index-url",
                index_url,
                *requirements,
            ],
            what="installing the release's dependencies",
            error=ReleaseCheckFailed,
        )
        (scratch / ".complete").write_text("\n".join(requirements) + "\n")
        try:
            os.replace(scratch, env_dir)
        except OSError:
            if not (env_dir / ".complete").is_file():  # another run won the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return env_dir


def install_wheel(
    wheel: Path,
    workdir: Path,
    *,
    distribution: str,
    version: str,
    deps: Path | None,
) -> Path:
    """Install *wheel* into a fresh virtualenv by its hash; return the env."""
    venv = workdir / "venv"
    _venv(venv)
    digest = sha256_file(wheel)
    requirements = workdir / "release.txt"
    requirements.write_text(f"{distribution}=={version} --hash=sha256:{digest}\n")
    run_quiet(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            # Byte-compiling every module of a large package takes seconds;
            # the import check and the guards compile what they use.
            "--no-compile",
            "--no-deps",
            "--require-hashes",
            "--no-index",
            "--only-binary",
            ":all:",
            "--find-links",
            str(wheel.parent),
            "-r",
            str(requirements),
        ],
        what=f"installing {wheel.name} with --require-hashes",
        error=ReleaseCheckFailed,
    )
    if deps is not None:
        (_site_packages(venv) / "_forkkit_deps.pth").write_text(
            str(_site_packages(deps)) + "\n"
        )
    return venv


def check_import(
    venv: Path,
    wheel: Path,
    workdir: Path,
    *,
    distribution: str,
    version: str,
    package: str,
    upstream_project: str,
) -> None:
    """Import the installed release: its version, provenance and origin, and
    no upstream distribution beside it."""
    probe = (
        "import importlib.metadata as md, json, importlib.resources as r\n"
        f"import {package} as p\n"
        "try:\n"
        f"    md.distribution({upstream_project!r}); upstream = True\n"
        "except md.PackageNotFoundError:\n"
        "    upstream = False\n"
        f"record = json.loads(r.files({package!r}).joinpath({PROVENANCE_FILE!r})"
        ".read_text())\n"
        "print(json.dumps({'version': getattr(p, '__version__', None), "
        "'file': p.__file__, 'upstream': upstream, "
        f"'installed': md.version({distribution!r}), "
        "'provenance': record.get('version')}))\n"
    )
    out = run_quiet(
        [str(venv / "bin" / "python"), "-I", "-c", probe],
        what=f"importing {package} from the installed {distribution}",
        error=ReleaseCheckFailed,
        env=clean_environment(),
        cwd=workdir,
    )
    found = json.loads(out.strip().splitlines()[-1])
    problems = []
    if found["version"] != version:
        problems.append(f"{package}.__version__ is {found['version']!r}")
    if found["installed"] != version or found["provenance"] != version:
        problems.append(
            f"installed metadata says {found['installed']}, provenance says "
            f"{found['provenance']}"
        )
    if not Path(found["file"]).resolve().is_relative_to(venv.resolve()):
        problems.append(f"{package} was imported from {found['file']}, not the wheel")
    if found["upstream"]:
        problems.append(
            f"upstream {upstream_project} is installed beside {distribution}; one "
            "of the release's dependencies pulls it in and would overwrite it"
        )
    if problems:
        raise ReleaseCheckFailed(
            f"{wheel.name} installed but fails its import check: " + "; ".join(problems)
        )


def run_guards(venv: Path, tree: Path, workdir: Path, node_ids: list[str]) -> None:
    """Run upstream's tests *node_ids* from *tree* against the installed wheel.

    Only the tests and the pytest configuration are copied, so the package
    imported is the installed one, never the source next to the tests.
    """
    gate = prepare_gate(tree, workdir / "gate", node_ids)
    run_quiet(
        [
            str(venv / "bin" / "python"),
            "-I",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--no-header",
            "-o",
            "addopts=",
            *node_ids,
        ],
        what=f"the guard tests ({len(node_ids)} node ids)",
        error=ReleaseCheckFailed,
        env=clean_environment(),
        cwd=gate,
    )


def prepare_gate(tree: Path, gate: Path, node_ids: list[str]) -> Path:
    """Copy the tests *node_ids* need, and the pytest configuration, to *gate*.

    Only tests are copied, so the code under test is whatever the interpreter
    that runs them imports (an installed wheel, or a tree on ``PYTHONPATH``).
    """
    gate.mkdir()
    for name in _PYTEST_CONFIG:
        if (tree / name).is_file():
            shutil.copy2(tree / name, gate / name)
    for relative in _guard_files(tree, node_ids):
        (gate / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / relative, gate / relative)
    return gate


def _guard_files(tree: Path, node_ids: list[str]) -> list[Path]:
    """The files the guard tests need, relative to *tree*.

    Each test's own folder, whole (its helpers and data), and the loose files
    of every folder above it (``conftest.py``, ``__init__.py``, shared helpers).
    Copying all of upstream's tests would cost thousands of files per release.
    """
    needed: set[Path] = set()
    for node in node_ids:
        folder = Path(node.split("::", 1)[0])
        if not (tree / folder).is_dir():
            folder = folder.parent
        needed.update(
            p.relative_to(tree) for p in (tree / folder).rglob("*") if p.is_file()
        )
        for parent in folder.parents:
            if parent == Path("."):
                break
            needed.update(
                p.relative_to(tree) for p in (tree / parent).iterdir() if p.is_file()
            )
    return sorted(needed)


def _venv(path: Path) -> None:
    run_quiet(
        [sys.executable, "-m", "venv", "--without-pip", str(path)],
        what="creating a virtualenv",
        error=ReleaseCheckFailed,
    )


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise ReleaseCheckFailed(f"{venv}: no site-packages folder")
    return found[0]
