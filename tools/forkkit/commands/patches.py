"""``tools/patches``: maintain a fork's patch series.

apply   build the workspace: the base plus one commit per patch
export  write the workspace's commits back into the series folder
check   the series is well-formed, applies exactly and is normalised
list    each patch with its subject, Upstream-Status and files
guards  each patch's guard tests fail on the base and pass with the series
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from forkkit import cli, guards
from forkkit.errors import CheckFailed, ForkError, PatchDoesNotApply
from forkkit.fork import Fork, set_base
from forkkit.project import Project
from forkkit.series import read_patch, read_series
from forkkit.workspace import Workspace, load_series, write_atomically

log = cli.log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/patches", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    cli.add_verbosity(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    apply = commands.add_parser("apply", help="build the workspace from the series")
    apply.add_argument(
        "--force",
        action="store_true",
        help="throw away unexported work in the workspace",
    )
    commands.add_parser("export", help="write workspace commits into patches/")
    commands.add_parser("check", help="verify the series (CI runs this)")
    listing = commands.add_parser("list", help="show the series")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    proving = commands.add_parser(
        "guards", help="prove each patch's guard tests fail without it"
    )
    proving.add_argument("--json", action="store_true", help="machine-readable output")
    for sub in commands.choices.values():
        sub.add_argument("fork", nargs="?", help="fork name (default: the only one)")
        cli.add_verbosity(sub, sub=True)

    args = parser.parse_args(argv)
    return cli.run(args, lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    project = Project.locate()
    fork = project.fork(args.fork)
    if args.command == "apply":
        return apply(project, fork, force=args.force)
    if args.command == "export":
        return export(project, fork)
    if args.command == "check":
        problems = check(project, fork)
        if problems:
            raise CheckFailed(
                f"{len(problems)} problem(s) in the {fork.name} series:\n"
                + "\n".join(f"  {p}" for p in problems)
            )
        print(f"{fork.name}: the series is consistent")
        return 0
    if args.command == "guards":
        return prove_guards(project, fork, as_json=args.json)
    return show(project, fork, as_json=args.json)


def apply(project: Project, fork: Fork, *, force: bool = False) -> int:
    """Build the workspace and print where it is."""
    started = time.monotonic()
    _, patches = load_series(project, fork)
    workspace = Workspace(project, fork)
    if fork.upstream.source == "index" and fork.base.sha256 is None:
        record_base_hash(project, fork, workspace)
    try:
        outcomes = workspace.apply(patches, force=force)
    except PatchDoesNotApply as exc:
        log.error(
            "the workspace is left at the failing patch; resolve it, then "
            "'git am --continue' there and 'tools/patches export %s'",
            fork.name,
        )
        raise exc
    for outcome in outcomes:
        log.info("  %-13s %s", outcome.outcome, outcome.file)
    log.info(
        "applied %d patch(es) on %s %s in %.1fs",
        len(outcomes),
        fork.upstream.project,
        fork.base.version,
        time.monotonic() - started,
    )
    print(project.shown(workspace.path))
    return 0


def record_base_hash(project: Project, fork: Fork, workspace: Workspace) -> None:
    """Import the base and write its sdist's sha256 into the declaration."""
    workspace.guard()
    imported = workspace.import_release(fork.base.version)
    text = set_base(fork, fork.base.version, imported.sha256)
    write_atomically(fork.path, text)
    log.info(
        "recorded base.sha256 = %s in %s", imported.sha256, project.shown(fork.path)
    )


def export(project: Project, fork: Fork) -> int:
    """Write the workspace back into the series folder and say what changed."""
    result = Workspace(project, fork).export()
    for name in result.written:
        log.info("  wrote    %s", name)
    for name in result.kept:
        log.info("  kept     %s (only its context moved)", name)
    for name in result.removed:
        log.info("  removed  %s", name)
    if result.series_rewritten:
        log.info("  wrote    series")
    if not result.changed:
        log.info("the series is unchanged")
    return 0


def check(project: Project, fork: Fork) -> list[str]:
    """Every problem with the series, as lines a person can act on."""
    shown = project.shown(fork.series_dir)
    try:
        series = read_series(fork.series_dir, shown)
    except ForkError as exc:
        return [str(exc)]

    problems: list[str] = []
    patches = []
    for entry in series.entries:
        try:
            patch = read_patch(fork.series_dir / entry.file, f"{shown}/{entry.file}")
            patches.append((fork.series_dir / entry.file, patch))
        except ForkError as exc:
            problems.append(str(exc))
    listed = set(series.names)
    for path in sorted(fork.series_dir.glob("*.patch")):
        if path.name not in listed:
            problems.append(
                f"{shown}/{path.name}: not listed in {shown}/series; "
                "add it there or delete it"
            )
    for name in fork.guards:
        if name not in listed:
            problems.append(
                f"{project.shown(fork.path)}: key 'guards.{name}' names "
                "a patch that is not in the series"
            )
    if problems:
        return problems

    # Apply exactly, and export, in a scratch workspace: the user's stays as is.
    with tempfile.TemporaryDirectory(prefix="forkkit-check-") as tmp:
        scratch = Workspace(project, fork, Path(tmp) / "workspace")
        try:
            outcomes = scratch.apply(
                patches, three_way=False, objects_from=project.workspace_dir(fork)
            )
        except PatchDoesNotApply as exc:
            return [f"{exc}; run 'tools/patches apply {fork.name}' to resolve it"]
        problems += [
            f"{shown}/{o.file}: {o.outcome} on {fork.base.version}; it is already in "
            "the base, so drop it from the series"
            for o in outcomes
            if o.outcome != "applied"
        ]
        copy = Path(tmp) / "series"
        copy.mkdir()
        for name in [*series.names, "series"]:
            (copy / name).write_bytes((fork.series_dir / name).read_bytes())
        result = scratch.export(copy)
        problems += [
            f"{shown}/{name}: not in exported form; run 'tools/patches apply "
            f"{fork.name}' and 'tools/patches export {fork.name}'"
            for name in result.written + result.kept
        ]
        if result.series_rewritten:
            problems.append(f"{shown}/series: export would rewrite it")
    return problems


def show(project: Project, fork: Fork, *, as_json: bool) -> int:
    """Print each patch with its subject, status and files."""
    _, patches = load_series(project, fork)
    rows = [
        {
            "file": p.file,
            "subject": p.subject,
            "upstream_status": str(p.status),
            "files": p.paths,
            "sha256": p.sha256,
        }
        for _, p in patches
    ]
    if as_json:
        json.dump(
            {"fork": fork.name, "base": fork.base.version, "patches": rows},
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    for number, row in enumerate(rows, 1):
        print(f"{number:3} {row['file']}")
        print(f"    {row['subject']}")
        print(f"    Upstream-Status: {row['upstream_status']}")
        print(f"    files: {', '.join(row['files'])}")
    if not rows:
        print(f"{fork.name}: the series is empty")
    return 0


def prove_guards(project: Project, fork: Fork, *, as_json: bool) -> int:
    """Run each patch's guard tests on the base and the series; 1 if one fails."""
    started = time.monotonic()
    proofs = guards.prove(project, fork)
    if as_json:
        json.dump(
            {
                "fork": fork.name,
                "base": fork.base.version,
                "patches": [proof.as_dict() for proof in proofs],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(f"| patch | guard tests | on {fork.base.version} | with the series |")
        print("|---|---|---|---|")
        for proof in proofs:
            base = proof.on_base.summary if proof.on_base else "-"
            series = proof.on_series.summary if proof.on_series else "-"
            print(f"| {proof.patch} | {len(proof.tests)} | {base} | {series} |")
    problems = [p for p in (proof.problem for proof in proofs) if p]
    log.info("guards: %d patch(es) in %.1fs", len(proofs), time.monotonic() - started)
    if problems:
        raise CheckFailed(
            f"{len(problems)} patch(es) of {fork.name} not guarded:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
