"""Building a release: the release tree, its provenance, sdist and wheel.

Everything that decides a release's bytes is an *input*: the base (version and
hash), the content of every patch, the fork's names and the build recipe. Two
builds from the same inputs give byte-identical files, because

* the tree comes from ``git archive`` with a fixed umask,
* ``SOURCE_DATE_EPOCH`` is the series head's commit time,
* the build backend is pinned (``BACKEND``) and used without isolation, so the
  one installed beside the toolchain is the one that builds,
* the sdist is rewritten with sorted members, fixed owners, modes and times
  and a gzip header without name or time.

How a release is built is its *recipe* (``RECIPES``), recorded in its
provenance, so that ``--pinned`` rebuilds an older release the way it was
made. Recipe 1 builds the wheel from the sdist, one after the other, as
``python -m build`` does by default. Recipe 2 builds both at once from two
copies of the same release tree; what building from the sdist proved, that the
sdist holds every module the wheel ships, is checked on the files instead
(``checks.check_files``).
"""

from __future__ import annotations

import configparser
import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import tomlkit
from packaging.utils import canonicalize_name

from forkkit.errors import BuildFailed, DeclarationError
from forkkit.fork import Fork

log = logging.getLogger(__name__)

#: The build backend every release is built with. Part of the recipe.
BACKEND = "setuptools==80.9.0"
#: Every recipe a release can have been built with, by number. Add one (never
#: change one) when anything about how a release is built changes its bytes.
RECIPES: dict[int, dict[str, Any]] = {
    1: {"recipe": 1, "backend": BACKEND, "sdist": "normalised-pax-gzip9"},
    2: {
        "recipe": 2,
        "backend": BACKEND,
        "sdist": "normalised-pax-gzip9",
        "wheel": "from-tree",
    },
}
#: The recipe new releases are built with.
RECIPE = RECIPES[2]
PROVENANCE_FILE = "_provenance.json"
SUMS_FILE = "SHA256SUMS"
PYPI_SIMPLE = "https://pypi.org/simple/"


@dataclass(frozen=True)
class ReleaseSettings:
    """The ``[release]`` table of a fork declaration, validated."""

    package: str
    extras: tuple[str, ...]
    pin: str
    pyproject: str
    index: str
    dependencies_index_url: str
    test_requirements: tuple[str, ...]


# key -> (type, element type for lists, description)
_RELEASE_KEYS: dict[str, tuple[type, type | None, str]] = {
    "package": (str, None, "the import package the distribution ships"),
    "extras": (list, str, 'extras the pin requests, e.g. ["server"]'),
    "pin": (str, None, "the hash-locked requirements file, relative to the project"),
    "pyproject": (str, None, "the pyproject.toml whose dependencies get the pin"),
    "index": (str, None, "the local package index folder, relative to the project"),
    "dependencies-index-url": (str, None, "where the release's dependencies come from"),
    "test-requirements": (list, str, "what the guard tests need besides the release"),
}


def release_settings(fork: Fork, shown: str) -> ReleaseSettings:
    """Validate *fork*'s ``[release]`` table; *shown* names its file."""
    raw = fork.release
    for key, value in raw.items():
        if key not in _RELEASE_KEYS:
            raise DeclarationError(
                f"{shown}: unknown key 'release.{key}'; the keys here are "
                + ", ".join(sorted(_RELEASE_KEYS))
            )
        kind, element, what = _RELEASE_KEYS[key]
        ok = isinstance(value, kind) and (
            element is None
            or (isinstance(value, list) and all(isinstance(v, element) for v in value))
        )
        if not ok:
            shape = f"list of {element.__name__}" if element else kind.__name__
            raise DeclarationError(
                f"{shown}: key 'release.{key}' must be a {shape} ({what})"
            )
    package = raw.get("package", fork.upstream.project.replace("-", "_").lower())
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", package):
        raise DeclarationError(
            f"{shown}: key 'release.package' is {package!r}, which is not an "
            "importable package name"
        )
    return ReleaseSettings(
        package=package,
        extras=tuple(raw.get("extras", [])),
        pin=raw.get("pin", f"requirements/{fork.distribution}.txt"),
        pyproject=raw.get("pyproject", "pyproject.toml"),
        index=raw.get("index", "index"),
        dependencies_index_url=raw.get("dependencies-index-url", PYPI_SIMPLE),
        test_requirements=tuple(raw.get("test-requirements", ["pytest"])),
    )


@dataclass(frozen=True)
class PatchRecord:
    """One patch as the provenance names it."""

    file: str
    subject: str
    upstream_status: str
    sha256: str
    blob: str

    def as_dict(self) -> dict[str, str]:
        return {
            "file": self.file,
            "subject": self.subject,
            "upstream_status": self.upstream_status,
            "sha256": self.sha256,
            "blob": self.blob,
        }


@dataclass(frozen=True)
class Inputs:
    """Everything a release's bytes depend on, apart from its version."""

    fork: str
    distribution: str
    package: str
    upstream: dict[str, str | None]
    base_version: str
    base_sha256: str | None
    patches: tuple[PatchRecord, ...]
    recipe: dict[str, Any] = field(default_factory=lambda: dict(RECIPE))

    @property
    def key(self) -> str:
        """A sha256 over all inputs: equal keys build equal files."""
        data = {
            "fork": self.fork,
            "distribution": self.distribution,
            "package": self.package,
            "base": {"version": self.base_version, "sha256": self.base_sha256},
            "patches": [p.sha256 for p in self.patches],
            "recipe": self.recipe,
        }
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def provenance(self, version: str, base_commit: str, epoch: int) -> dict[str, Any]:
        """The record shipped as ``<package>/_provenance.json``."""
        return {
            "fork": self.fork,
            "distribution": self.distribution,
            "version": version,
            "upstream": dict(self.upstream),
            "base": {
                "version": self.base_version,
                "sha256": self.base_sha256,
                "commit": base_commit,
            },
            "patches": [p.as_dict() for p in self.patches],
            "inputs": self.key,
            "recipe": dict(self.recipe),
            "source_date_epoch": epoch,
        }


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob with *data*, to find a patch in project history."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Artifacts:
    """A built release: its files and their sha256."""

    folder: Path
    sdist: Path
    wheel: Path

    @property
    def files(self) -> list[Path]:
        return [self.wheel, self.sdist]

    def hashes(self) -> dict[str, str]:
        return {p.name: sha256_file(p) for p in self.files}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Preparing the release tree.


def prepare_tree(
    tree: Path,
    settings: ReleaseSettings,
    distribution: str,
    version: str,
    provenance: dict[str, Any],
) -> None:
    """Rename, re-version and stamp the upstream tree at *tree* in place.

    Upstream keeps name and version in ``setup.cfg`` ``[metadata]`` and/or
    ``pyproject.toml`` ``[project]``, and the version again in the package's
    ``__init__.py``; every one that exists is set. The import package keeps
    its name.
    """
    package_dir = tree / settings.package
    if not (package_dir / "__init__.py").is_file():
        raise BuildFailed(
            f"the base has no {settings.package}/__init__.py; set release.package "
            "in the fork declaration to the import package the release ships"
        )

    # Generated metadata of an sdist import would contradict the new name.
    (tree / "PKG-INFO").unlink(missing_ok=True)
    for stale in tree.glob("*.egg-info"):
        _remove_tree(stale)

    named = _set_setup_cfg(tree / "setup.cfg", distribution, version, settings)
    named = _set_pyproject(tree / "pyproject.toml", distribution, version) or named
    if not named:
        raise BuildFailed(
            "the base declares its name neither in setup.cfg [metadata] nor in "
            "pyproject.toml [project]; the release cannot be renamed to "
            f"{distribution}"
        )
    _set_dunder_version(package_dir / "__init__.py", version)

    text = json.dumps(provenance, indent=2, sort_keys=True) + "\n"
    (package_dir / PROVENANCE_FILE).write_text(text, encoding="utf-8")
    _keep_provenance_uncompressed(tree / "setup.py")
    manifest = tree / "MANIFEST.in"
    line = f"include {settings.package}/{PROVENANCE_FILE}\n"
    old = manifest.read_text(encoding="utf-8") if manifest.is_file() else ""
    if line not in old:
        manifest.write_text(
            old + ("" if old.endswith("\n") or not old else "\n") + line
        )


# moto's setup.py gzips every *.json of the wheel (its loaders read both forms);
# the provenance record must stay plain JSON at <package>/_provenance.json.
_JSON_GLOB = re.compile(
    r"^(?P<indent>[ \t]*)(?P<name>\w+) = glob\.glob\(.*\*\.json.*\)[ \t]*$", re.M
)


def _keep_provenance_uncompressed(setup_py: Path) -> None:
    if not setup_py.is_file():
        return
    text = setup_py.read_text(encoding="utf-8")

    def keep(match: re.Match[str]) -> str:
        indent, name = match.group("indent"), match.group("name")
        return (
            f"{match.group(0)}\n{indent}{name} = [f for f in {name} "
            f'if not f.endswith("{PROVENANCE_FILE}")]'
        )

    new = _JSON_GLOB.sub(keep, text)
    if new != text:
        setup_py.write_text(new, encoding="utf-8")


def _set_setup_cfg(
    path: Path, distribution: str, version: str, settings: ReleaseSettings
) -> bool:
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    if not parser.has_option("metadata", "name"):
        return False

    text = _set_ini_key(text, "metadata", "name", distribution)
    text = _set_ini_key(text, "metadata", "version", version)
    # The provenance file must reach the wheel as package data.
    if parser.has_section("options"):
        current = parser.get("options.package_data", settings.package, fallback="")
        names = [n.strip() for n in re.split(r"[,\n]", current) if n.strip()]
        if PROVENANCE_FILE not in names:
            joined = ", ".join([*names, PROVENANCE_FILE])
            if parser.has_section("options.package_data"):
                text = _set_ini_key(
                    text, "options.package_data", settings.package, joined
                )
            else:
                text = text.rstrip("\n") + (
                    f"\n\n[options.package_data]\n{settings.package} = {joined}\n"
                )
    path.write_text(text, encoding="utf-8")
    return True


def _set_ini_key(text: str, section: str, key: str, value: str) -> str:
    """Set *key* in *section* of an ini text, keeping every other line."""
    lines = text.splitlines(keepends=True)
    current = None
    start = end = None
    for number, line in enumerate(lines):
        header = re.match(r"^\[([^\]]+)\]\s*$", line)
        if header:
            if current == section:
                end = number
                break
            current = header.group(1).strip()
            if current == section:
                start = number
            continue
        if current == section and re.match(rf"^{re.escape(key)}\s*[=:]", line):
            lines[number] = f"{key} = {value}\n"
            # Drop continuation lines of the old value.
            following = number + 1
            while following < len(lines) and lines[following][:1] in (" ", "\t"):
                if not lines[following].strip():
                    break
                del lines[following]
            return "".join(lines)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    insert = start + 1 if end is None else end
    if end is None:
        insert = len(lines)
        while insert > start + 1 and not lines[insert - 1].strip():
            insert -= 1
    lines.insert(insert, f"{key} = {value}\n")
    return "".join(lines)


def _set_pyproject(path: Path, distribution: str, version: str) -> bool:
    """Pin the build backend; set name and version when ``[project]`` has them."""
    if not path.is_file():
        document = tomlkit.document()
    else:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    system = document.setdefault("build-system", tomlkit.table())
    system["requires"] = [BACKEND]
    system["build-backend"] = "setuptools.build_meta"

    named = False
    project = document.get("project")
    if isinstance(project, dict) and "name" in project:
        project["name"] = distribution
        dynamic = project.get("dynamic", [])
        if "version" not in dynamic:
            project["version"] = version
        named = True
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return named


_DUNDER_VERSION = re.compile(r"""^(__version__\s*=\s*)(["'])[^"']*\2""", re.M)


def _set_dunder_version(path: Path, version: str) -> None:
    text = path.read_text(encoding="utf-8")
    new, count = _DUNDER_VERSION.subn(lambda m: f'{m.group(1)}"{version}"', text)
    if count:
        path.write_text(new, encoding="utf-8")


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


# Building.


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without PIP_* and with pip's configuration files ignored.

    This machine's pip configuration adds indexes and find-links; a build or
    an install that read it could resolve something other than what the
    command line names.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra or {})
    return env


def run_quiet(
    command: list[str],
    *,
    what: str,
    error: type[Exception] = BuildFailed,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    umask: int | None = None,
) -> str:
    """Run *command* with output captured; on failure raise *error* with it."""
    log.debug("running %s", " ".join(command))
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env or clean_environment(),
        cwd=cwd,
        check=False,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise error(
            f"{what} failed (exit status {result.returncode}): "
            f"{' '.join(command)}\n{tail}"
        )
    log.debug("%s", output)
    return result.stdout


def recipe_number(recipe: Any) -> int | None:
    """Which of `RECIPES` *recipe* (as a provenance records it) is, if any."""
    return next((n for n, known in RECIPES.items() if recipe == known), None)


def trees_needed(recipe: dict[str, Any]) -> int:
    """How many copies of the release tree building with *recipe* takes."""
    return 2 if recipe.get("wheel") == "from-tree" else 1


def check_backend(recipe: dict[str, Any]) -> None:
    """Refuse to build unless *recipe*'s backend is the installed one."""
    name, _, wanted = recipe["backend"].partition("==")
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed != wanted:
        raise BuildFailed(
            f"the build recipe needs {recipe['backend']} beside the toolchain, but "
            f"{installed or 'no ' + name} is installed; run tools/bootstrap"
        )


def _build_command(tree: Path, outdir: Path, *only: str) -> list[str]:
    return [
        *(sys.executable, "-m", "build", "--no-isolation", *only),
        *("--outdir", str(outdir), str(tree)),
    ]


def _build_env(epoch: int) -> dict[str, str]:
    return clean_environment(
        {"SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0", "TZ": "UTC"}
    )


def _only_one(outdir: Path, pattern: str, what: str) -> Path:
    found = sorted(outdir.glob(pattern))
    if len(found) != 1:
        raise BuildFailed(
            f"python -m build left {len(found)} {what}(s) in {outdir}; expected one"
        )
    return found[0]


class Build:
    """The sdist and the wheel of a release tree, being built by *recipe*.

    With a recipe that builds both from the tree, the sdist builds in a
    subprocess from the first tree while `wheel` builds the wheel from the
    second; otherwise `wheel` builds the sdist and then the wheel from it.
    Use it as a context manager: leaving it stops a build still running.

    The wheel is reproducible as built; the sdist only once `finish` has
    normalised it, which callers may run beside their checks of the wheel.
    """

    def __init__(
        self, trees: list[Path], outdir: Path, epoch: int, recipe: dict[str, Any]
    ) -> None:
        check_backend(recipe)
        if len(trees) != trees_needed(recipe):
            raise ValueError(
                f"recipe {recipe['recipe']} builds from {trees_needed(recipe)} tree(s)"
            )
        self.trees, self.outdir, self.epoch = trees, outdir, epoch
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._sdist: Path | None = None
        self._wheel: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output: Path | None = None
        self._command = _build_command(trees[0], outdir, "--sdist")
        if len(trees) == 2:
            # Beside outdir, so that it goes with the caller's scratch folder.
            handle, name = tempfile.mkstemp(
                prefix=".sdist-build-", suffix=".log", dir=outdir.parent
            )
            self._output = Path(name)
            log.debug("running %s", " ".join(self._command))
            try:
                self._process = subprocess.Popen(
                    self._command,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=_build_env(epoch),
                    preexec_fn=lambda: os.umask(0o022),
                    # build runs the backend in a child of its own: `stop`
                    # signals the whole group.
                    process_group=0,
                )
            except OSError:
                self._output.unlink()
                raise
            finally:
                os.close(handle)

    @property
    def together(self) -> bool:
        """Whether sdist and wheel build at the same time."""
        return self._process is not None

    def wheel(self) -> Path:
        """Build the wheel (and, one after the other, the sdist before it)."""
        if self._wheel is None:
            if self.together:
                only: tuple[str, ...] = ("--wheel",)
                tree = self.trees[1]
            else:
                only, tree = (), self.trees[0]
            run_quiet(
                _build_command(tree, self.outdir, *only),
                what="python -m build" + (" --wheel" if only else ""),
                env=_build_env(self.epoch),
                umask=0o022,
            )
            self._wheel = _only_one(self.outdir, "*.whl", "wheel")
            if not self.together:
                self._sdist = _only_one(self.outdir, "*.tar.gz", "sdist")
        return self._wheel

    def sdist(self) -> Path:
        """The built sdist, waiting for its build to finish."""
        if self._process is None:
            self.wheel()
        elif self._sdist is None:
            status = self._process.wait()
            if status != 0:
                raise BuildFailed(
                    f"python -m build --sdist failed (exit status {status}): "
                    f"{' '.join(self._command)}\n{self._output_tail()}"
                )
            self._sdist = _only_one(self.outdir, "*.tar.gz", "sdist")
        built = self._sdist
        assert built is not None
        return built

    def artifacts(self) -> Artifacts:
        return Artifacts(self.outdir, self.sdist(), self.wheel())

    def _output_tail(self) -> str:
        try:
            text = self._output.read_text(errors="replace") if self._output else ""
        except FileNotFoundError:  # stopped meanwhile
            text = ""
        return "\n".join(text.strip().splitlines()[-25:])

    def stop(self) -> None:
        """Stop a build still running; remove its output."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        if self._output is not None:
            self._output.unlink(missing_ok=True)

    def __enter__(self) -> Build:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def finish(artifacts: Artifacts, epoch: int) -> None:
    """Normalise the sdist and write ``SHA256SUMS``: the files are final."""
    normalise_sdist(artifacts.sdist, epoch)
    write_sums(artifacts)


def normalise_sdist(path: Path, epoch: int) -> None:
    """Rewrite an sdist so that its bytes depend on its members' content only."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(path, "r:gz") as source:
        for info in source:
            if not (info.isfile() or info.isdir()):
                raise BuildFailed(
                    f"{path.name}: member {info.name} is neither file nor folder"
                )
            data = None
            if info.isfile():
                stream = source.extractfile(info)
                assert stream is not None
                data = stream.read()
            members.append((info, data))

    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, data in sorted(members, key=lambda m: m[0].name):
            clean = tarfile.TarInfo(info.name)
            clean.type = info.type
            clean.mtime = epoch
            clean.uid = clean.gid = 0
            clean.uname = clean.gname = ""
            executable = info.isdir() or bool(info.mode & 0o111)
            clean.mode = 0o755 if executable else 0o644
            if data is None:
                tar.addfile(clean)
            else:
                clean.size = len(data)
                tar.addfile(clean, io.BytesIO(data))
    handle, name = tempfile.mkstemp(prefix=".sdist-", dir=path.parent)
    with os.fdopen(handle, "wb") as out:
        out.write(buffer.getvalue())
    os.replace(name, path)


def write_sums(artifacts: Artifacts) -> Path:
    """Write ``SHA256SUMS`` (sha256sum's format) beside the files."""
    lines = [
        f"{digest}  {name}\n" for name, digest in sorted(artifacts.hashes().items())
    ]
    target = artifacts.folder / SUMS_FILE
    target.write_text("".join(lines), encoding="ascii")
    return target


def distribution_filename_prefix(distribution: str) -> str:
    """How wheel and sdist file names spell *distribution* (``moto_ext``)."""
    return canonicalize_name(distribution).replace("-", "_")
