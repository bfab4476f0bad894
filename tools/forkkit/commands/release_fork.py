"""``tools/release-fork``: build, check, publish and pin a fork release.

Applies the series to the base, renames the distribution, sets the version
``<base>.post<N>``, builds sdist and wheel reproducibly, checks them, runs
the guard tests, publishes to the index and pins the release. Running it
again with the same inputs publishes nothing and changes no file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forkkit import cli, publish
from forkkit.project import Project
from forkkit.release import Options, Outcome, release

log = cli.log

_SAID = {
    "released": "released",
    "unchanged": "already released and pinned; nothing changed",
    "pinned": "already on the index; pinned it",
    "checked": "built and checked (--dry-run: nothing published or pinned)",
    "unpinned": "not pinned yet; nothing to rebuild",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/release-fork",
        description=__doc__.split("\n\n")[0] if __doc__ else "",
    )
    parser.add_argument("fork", nargs="?", help="fork name (default: the only one)")
    where = parser.add_argument_group(
        "where to publish (default: the project's local index folder)"
    )
    where.add_argument("--repository", metavar="NAME", help="a .pypirc repository")
    where.add_argument(
        "--repository-url",
        metavar="URL",
        help="an upload URL (twine's --repository-url)",
    )
    where.add_argument(
        "--index-url",
        metavar="URL",
        help="the simple API of that index (default: <repository-url>/simple/)",
    )
    where.add_argument(
        "--config-file", metavar="PATH", type=Path, help="the .pypirc to read"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build and check; publish and pin nothing",
    )
    parser.add_argument(
        "--pinned",
        action="store_true",
        help="rebuild exactly the pinned release; publish it only if its hashes "
        "equal the pin's",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    cli.add_verbosity(parser)
    args = parser.parse_args(argv)

    # Bad combinations are refused before any work.
    if args.repository and args.repository_url:
        parser.error("give --repository or --repository-url, not both")
    remote = bool(args.repository or args.repository_url)
    if (args.index_url or args.config_file) and not remote:
        parser.error("--index-url and --config-file go with --repository(-url)")
    target = None
    if remote:
        target = publish.remote_target(
            args.repository, args.repository_url, args.index_url, args.config_file
        )
    options = Options(target=target, dry_run=args.dry_run, pinned=args.pinned)
    return cli.run(args, lambda: _release(args.fork, options, as_json=args.json))


def _release(name: str | None, options: Options, *, as_json: bool) -> int:
    project = Project.locate()
    fork = project.fork(name)
    outcome = release(project, fork, options)
    show(outcome, as_json=as_json)
    return 0


def show(outcome: Outcome, *, as_json: bool) -> None:
    """Print the result: version, file names and hashes."""
    if as_json:
        json.dump(outcome.as_dict(), sys.stdout, indent=2)
        print()
        return
    log.info("%s %s: %s", outcome.distribution, outcome.version, _SAID[outcome.status])
    if outcome.status == "unpinned":
        return
    print(f"{outcome.distribution} {outcome.version}")
    for name, digest in sorted(outcome.files.items()):
        print(f"{digest}  {name}")


if __name__ == "__main__":
    sys.exit(main())
