"""What every command line of the toolchain shares: verbosity, errors, exits.

Commands parse their arguments, then call ``run`` with a function that does
the work. Failures become one ``error:`` line on stderr and an exit status
from ``EXIT_CODES``; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from forkkit import errors
from forkkit.gitenv import redact

#: Exit status per failure, most specific class first.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (errors.CheckFailed, 1),
    (errors.DeclarationError, 2),
    (errors.SeriesError, 2),
    (errors.PatchDoesNotApply, 3),
    (errors.UpstreamError, 4),
    (errors.WorkspaceError, 5),
    (errors.ReleaseInProgress, 5),
    (errors.ReleaseCheckFailed, 1),
    (errors.PublishFailed, 7),
    (errors.PinMismatch, 8),
    (errors.ReleaseError, 6),
    (errors.ForkError, 6),
]
INTERRUPTED = 130

log = logging.getLogger("forkkit")


def add_verbosity(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """Add ``-v``/``-q``, which count into one level.

    On a subcommand (*sub*), the flags only count when given there, so that
    ``tools/patches -v apply`` and ``tools/patches apply -v`` both work.
    """
    default = argparse.SUPPRESS if sub else 0
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="more output; tracebacks on errors",
    )
    parser.add_argument(
        "-q", "--quiet", action="count", default=default, help="less output"
    )


def setup_logging(args: argparse.Namespace) -> None:
    """Send the toolchain's log to stderr at the level -v/-q asked for."""
    level = logging.INFO - 10 * (args.verbose - args.quiet)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(max(logging.DEBUG, min(level, logging.CRITICAL)))
    log.propagate = False


def run(args: argparse.Namespace, work: Callable[[], int]) -> int:
    """Call *work*; turn toolchain failures into a message and an exit status."""
    setup_logging(args)
    try:
        return work()
    except KeyboardInterrupt:
        print(
            "error: interrupted; nothing was changed in forks/ or patches/",
            file=sys.stderr,
        )
        return INTERRUPTED
    except errors.ForkError as exc:
        if args.verbose:
            log.exception("traceback:")
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1
