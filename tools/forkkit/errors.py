"""The exceptions the toolchain raises, under one root.

Every exception carries a message that a person can act on: it names the
file, line or key at fault and says what to do. The command line maps each
class to an exit status in one place (``forkkit.cli``).
"""

from __future__ import annotations


class ForkError(Exception):
    """Root of everything the toolchain reports as a failure."""


class DeclarationError(ForkError):
    """A fork declaration (``forks/<name>.toml``) is missing, malformed or wrong."""


class SeriesError(ForkError):
    """The series file or one of its patch files is not acceptable."""


class UpstreamError(ForkError):
    """Upstream could not provide the release that was asked for."""


class UpstreamUnreachable(UpstreamError):
    """The upstream source (package index or git URL) did not answer."""


class UpstreamReleaseNotFound(UpstreamError):
    """The upstream source has no release with the requested version or tag."""


class SdistHashMismatch(UpstreamError):
    """A downloaded release sdist does not have the declared sha256."""


class UnsafeArchive(UpstreamError):
    """A release archive holds a member that could write outside its tree."""


class WorkspaceError(ForkError):
    """The workspace is in a state that the command refuses to touch."""


class PatchDoesNotApply(ForkError):
    """A patch of the series neither applies exactly nor by a 3-way merge.

    ``conflict`` holds the structured report (a ``forkkit.series.Conflict``).
    """

    def __init__(self, message: str, conflict: object) -> None:
        super().__init__(message)
        self.conflict = conflict


class CheckFailed(ForkError):
    """``check`` found problems; the message lists every one of them."""


class ReleaseError(ForkError):
    """Root of the failures of ``tools/release-fork``."""


class ReleaseInProgress(ReleaseError):
    """Another release of the same fork is running in this project."""


class BuildFailed(ReleaseError):
    """Preparing the release tree or building its sdist and wheel failed."""


class ReleaseCheckFailed(ReleaseError):
    """A built release failed a check before publishing (metadata, import, gate)."""


class PublishFailed(ReleaseError):
    """The package index did not take the release."""


class AuthenticationFailed(PublishFailed):
    """The package index refused the credentials (HTTP 401 or 403)."""


class IndexConflict(PublishFailed):
    """The index holds a file of the same name with different content."""


class PinMismatch(ReleaseError):
    """A rebuilt pinned release does not have the pinned hashes."""
