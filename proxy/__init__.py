"""An AWS endpoint: a listener chain in front of moto (see DESIGN.md)."""

from proxy.listener import (
    Listener,
    ListenerChain,
    ListenerContext,
    Registration,
    register,
)
from proxy.messages import Request, Response, StreamedBody

__all__ = [
    "Listener",
    "ListenerChain",
    "ListenerContext",
    "Registration",
    "Request",
    "Response",
    "StreamedBody",
    "register",
]
