"""Benchmark: tools/release-fork against a plain build and upload.

In one run, on a copy of this project's fork declaration and series, with
throw-away pypiservers on loopback ports:

1. ``tools/release-fork --repository-url A`` from a fresh project (cold: the
   workspace imports the base; the sdist and dependency caches are warm);
2. the same release again: nothing to do;
3. ``--rounds`` rounds (default 3), each of: plain ``python -m build``
   (isolated, as a maintainer would run it) and ``twine upload`` of the very
   tree that release built, to an empty server; and a warm release (the
   workspace present) to another empty server. The two alternate, so that
   other load on a shared machine falls on both alike.

Prints each time (the best of the rounds for the alternating pair, every
round beside it) and the ratios release / baseline. Targets: at most 1.3x
for a full release, under 3 seconds for the no-op run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


@contextmanager
def pypiserver(folder: Path) -> Iterator[str]:
    folder.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pypiserver",
            "run",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-a",
            ".",
            "-P",
            ".",
            "--disable-fallback",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as server:
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(100):
                try:
                    requests.get(url + "simple/", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.monotonic() - started


def plain_build_and_upload(
    tree: Path, outdir: Path, server: str, env: dict[str, str]
) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(tree)],
        check=True,
        env=clean_env(PIP_INDEX_URL="https://pypi.org/simple/"),
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *(sys.executable, "-m", "twine", "upload", "--non-interactive"),
            *("--disable-progress-bar", "--repository-url", server),
            *map(str, sorted(outdir.iterdir())),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/release", description=__doc__)
    parser.add_argument("fork", nargs="?", default="moto")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        work = Path(tmp)
        project = work / "project"
        project.mkdir()
        for name in ("forks", "patches"):
            shutil.copytree(ROOT / name, project / name)
        shutil.copy2(ROOT / "pyproject.toml", project / "pyproject.toml")
        env = clean_env(
            FORKKIT_ROOT=str(project), TWINE_USERNAME="bench", TWINE_PASSWORD="bench"
        )
        release = [str(ROOT / "tools" / "release-fork"), "-q", args.fork]

        with pypiserver(work / "first") as first:
            cold = timed([*release, "--repository-url", first], env=env)
            noop = timed([*release, "--repository-url", first], env=env)

        # The tree release-fork built, exactly: its sdist, unpacked.
        sdist = next((project / "dist" / args.fork).glob("*.tar.gz"))
        with tarfile.open(sdist) as archive:
            archive.extractall(work / "tree", filter="data")
        tree = next((work / "tree").iterdir())

        plain: list[float] = []
        warm: list[float] = []
        for round_ in range(args.rounds):
            with pypiserver(work / f"plain-{round_}") as server:
                plain.append(
                    plain_build_and_upload(tree, work / f"dist-{round_}", server, env)
                )
            with pypiserver(work / f"warm-{round_}") as server:
                warm.append(timed([*release, "--repository-url", server], env=env))

    baseline, full = min(plain), min(warm)
    every = {"plain": plain, "warm": warm}
    rounds = {k: ", ".join(f"{t:.1f}" for t in v) for k, v in every.items()}
    print(f"release-fork, full, cold workspace: {cold:6.1f} s")
    print(f"release-fork, full, warm workspace: {full:6.1f} s  ({rounds['warm']})")
    print(f"python -m build + twine upload:     {baseline:6.1f} s  ({rounds['plain']})")
    print(f"ratio warm / plain:                 {full / baseline:6.2f}x  (target 1.3x)")
    print(f"ratio cold / plain:                 {cold / baseline:6.2f}x")
    print(f"release-fork, no-op:                {noop:6.2f} s  (target < 3 s)")
    return 0 if full / baseline <= 1.3 and noop < 3 else 1


if __name__ == "__main__":
    sys.exit(main())
