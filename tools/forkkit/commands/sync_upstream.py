"""``tools/sync-upstream``: carry a fork's series onto newer upstream releases.

Finds upstream releases newer than the base, carries the series there, drops
patches upstream already has (with evidence), stops at a conflict with a
precise report, and on success refreshes the series and the base. Writes a
Markdown and a JSON report; the exit status tells CI what happened:

  0   up to date: the base is the newest upstream release (or --to)
  10  updated: forks/ and patches/ were changed, review and commit them
  11  a person is needed: a conflict, or a guarding upstream test failed
  1-6 error (see README); 130 interrupted. forks/ and patches/ are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from forkkit import cli, report
from forkkit.errors import ForkError
from forkkit.project import Project
from forkkit.sync import Options, Sync

log = cli.log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/sync-upstream",
        description=__doc__.split("\n\n")[1] if __doc__ else "",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[2] if __doc__ else "",
    )
    cli.add_verbosity(parser)
    parser.add_argument("fork", nargs="?", help="fork name (default: the only one)")
    parser.add_argument("--to", metavar="VERSION", help="target release (newest)")
    parser.add_argument(
        "--step",
        action="store_true",
        help="pass through every release between the base and the target",
    )
    parser.add_argument(
        "--pre", action="store_true", help="include pre-releases in discovery"
    )
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="finish a run stopped at a conflict, once it is resolved",
    )
    parser.add_argument(
        "--abort", action="store_true", help="drop a run stopped at a conflict"
    )
    parser.add_argument(
        "--no-guards",
        dest="guards",
        action="store_false",
        help="do not run the guarding upstream tests ([guards] in the declaration)",
    )
    parser.add_argument(
        "--release",
        action="store_true",
        help="after an update, hand over to tools/release-fork",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        metavar="DIR",
        help="where to write the reports (default: .workspace/reports)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the JSON report on stdout instead of the Markdown one",
    )
    args = parser.parse_args(argv)

    starting = [
        name
        for name, given in (
            ("--to", args.to is not None),
            ("--step", args.step),
            ("--pre", args.pre),
            ("--release", args.release),
        )
        if given
    ]
    if args.resume and args.abort:
        parser.error("--continue and --abort exclude each other")
    if (args.resume or args.abort) and starting:
        flag = "--continue" if args.resume else "--abort"
        parser.error(
            f"{flag} takes no {', '.join(starting)}: the stopped run keeps its own"
        )
    return cli.run(args, lambda: _work(args))


def _work(args: argparse.Namespace) -> int:
    project = Project.locate()
    fork = project.fork(args.fork)
    sync = Sync(project, fork)
    if args.abort:
        sync.abort()
        return 0
    try:
        if args.resume:
            result = sync.resume()
        else:
            result = sync.start(
                Options(
                    to=args.to,
                    step=args.step,
                    pre=args.pre,
                    guards=args.guards,
                    release=args.release,
                )
            )
    except ForkError as exc:
        _github_outputs({"status": "error", "error": str(exc).splitlines()[0]})
        raise

    folder = args.report_dir or project.root / ".workspace" / "reports"
    series_dir = project.shown(fork.series_dir)
    paths = write_reports(result, folder, series_dir)
    markdown = report.to_markdown(result, series_dir)
    if args.json:
        sys.stdout.write(report.to_json_text(result))
    else:
        sys.stdout.write(markdown)
    _github(result, series_dir, markdown, paths)
    log.info(
        "report: %s, %s",
        project.shown(paths["report-markdown"]),
        project.shown(paths["report-json"]),
    )
    return result.exit_code


def write_reports(
    result: report.SyncReport, folder: Path, series_dir: str
) -> dict[str, Path]:
    """Write ``sync-upstream-<fork>.md`` and ``.json`` into *folder*."""
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / f"sync-upstream-{result.fork}.md"
    data = folder / f"sync-upstream-{result.fork}.json"
    markdown.write_text(report.to_markdown(result, series_dir), encoding="utf-8")
    data.write_text(report.to_json_text(result), encoding="utf-8")
    return {"report-markdown": markdown, "report-json": data}


def _github(
    result: report.SyncReport,
    series_dir: str,
    markdown: str,
    paths: dict[str, Path],
) -> None:
    """Annotations, step outputs and the step summary, in GitHub Actions only."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    for line in report.github_annotations(result, series_dir):
        print(line)
    _github_outputs(report.outputs(result, {k: str(v) for k, v in paths.items()}))
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as out:
            out.write(markdown)


def _github_outputs(values: dict[str, str]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if os.environ.get("GITHUB_ACTIONS") != "true" or not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        for key, value in values.items():
            if "\n" in value:
                marker = "EOF_" + json.dumps(key).strip('"').upper()
                out.write(f"{key}<<{marker}\n{value}\n{marker}\n")
            else:
                out.write(f"{key}={value}\n")


if __name__ == "__main__":
    sys.exit(main())
