"""The proxy's exceptions: one root, each subclass names the condition it reports.

Every error a client can see carries the HTTP status and the AWS error code it
renders as; `proxy.render` turns it into the body the service's protocol
expects.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Root of every error the proxy raises on purpose."""

    status = 500
    code = "InternalFailure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequest(ProxyError):
    """The request cannot be read: bad framing or a body shorter than declared."""

    status = 400
    code = "MalformedRequest"


class UnknownService(ProxyError):
    """The request names a service that the backend does not serve."""

    status = 400
    code = "UnknownService"


class ListenerFailed(ProxyError):
    """A listener raised; the traceback is logged, the client gets a 500."""

    status = 500
    code = "InternalFailure"


class InvalidListenerResult(ProxyError):
    """A listener returned something outside the listener protocol."""

    status = 503
    code = "ServiceUnavailable"


class BackendUnreachable(ProxyError):
    """The backend refused or dropped the connection."""

    status = 502
    code = "BadGateway"


class BackendTimeout(ProxyError):
    """The backend did not answer in time."""

    status = 504
    code = "GatewayTimeout"


class ListenerLoadError(ProxyError):
    """A listener named by an entry point or a flag cannot be loaded."""


class BackendUnavailable(ProxyError):
    """The chosen backend cannot be set up (moto is not importable, bad URL)."""
