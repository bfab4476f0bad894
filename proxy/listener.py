"""The listener chain: the one place that decides whether a request is
forwarded, answered by a listener, or replaced.

A listener has two methods, kept from the original generic proxy:

- `forward_request(method, path, data, headers)` returns `True` to forward the
  request as it is, an `int` to answer with that HTTP status, a `Response` to
  answer with it, or a `Request` to forward that request instead (the listeners
  after it see the replacement). Anything else is a 503.
- `return_response(method, path, data, headers, response)` returns a `Response`
  that replaces the one so far, or `None` to keep it.

A listener also says which service it is for (`service`, None for every
request) and where it goes in the chain (`order`, lower first; ties by name).
`forward_request` runs in that order, `return_response` in reverse, and only
for the listeners whose `forward_request` ran.

A listener that works in the background, or sends requests of its own, may
also have `start(context)` and `stop()`: the server calls them once, after it
binds and when it stops. The `ListenerContext` holds the proxy's URL and the
backend, whose `send` skips the chain.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import EllipsisType
from typing import Any, Protocol, runtime_checkable

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response as WerkzeugResponse

from proxy.backend import Backend
from proxy.errors import InvalidListenerResult, ListenerFailed, ListenerLoadError
from proxy.messages import Body, Request, Response, close_body

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "proxy.listeners"

ForwardResult = bool | int | Response | Request


@runtime_checkable
class Listener(Protocol):
    """What the chain calls before and after forwarding a request."""

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> ForwardResult: ...

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Response | None: ...


@dataclass(frozen=True)
class ListenerContext:
    """What a listener's `start` receives: where clients reach the proxy, and
    the backend to send requests to directly."""

    url: str
    backend: Backend


@dataclass(frozen=True)
class Registration:
    """One listener in the chain, with the name it was registered under."""

    name: str
    listener: Listener
    service: str | None
    order: int


class ListenerChain:
    """The global and per-service listeners, each list in its explicit order."""

    def __init__(self, registrations: Iterable[Registration] = ()) -> None:
        self._all: list[Registration] = []
        self._by_service: dict[str | None, list[Registration]] = {}
        for registration in registrations:
            self.add(registration)

    def add(self, registration: Registration) -> None:
        """Put one more listener in the chain."""
        self._all.append(registration)
        self._all.sort(key=lambda r: (r.order, r.name))
        self._by_service.clear()

    @property
    def registrations(self) -> Sequence[Registration]:
        """Every listener, global and per service, in order."""
        return tuple(self._all)

    def for_service(self, service: str | None) -> list[Registration]:
        """The global listeners and those of `service`, merged in order."""
        chain = self._by_service.get(service)
        if chain is None:
            chain = [r for r in self._all if r.service in (None, service)]
            self._by_service[service] = chain
        return chain

    def start(self, context: ListenerContext) -> None:
        """Call `start(context)` on every listener that has one, in order."""
        for registration in self._all:
            start = getattr(registration.listener, "start", None)
            if start is None:
                continue
            try:
                start(context)
            except Exception as exc:
                raise ListenerLoadError(
                    f"listener {registration.name} failed to start: {exc}"
                ) from exc

    def stop(self) -> None:
        """Call `stop()` on every listener that has one, in reverse order."""
        for registration in reversed(self._all):
            stop = getattr(registration.listener, "stop", None)
            if stop is None:
                continue
            try:
                stop()
            except Exception:
                log.exception("listener %s failed to stop", registration.name)

    def forward(
        self, chain: list[Registration], request: Request
    ) -> tuple[Request, Response | None, int]:
        """Run `forward_request` down the chain.

        Returns the request to forward (maybe replaced), the answer when a
        listener gave one, and how many listeners ran, so that `respond` calls
        `return_response` on exactly those.
        """
        for index, registration in enumerate(chain):
            result = _call(
                registration,
                "forward_request",
                registration.listener.forward_request,
                request.method,
                request.path,
                request.data,
                request.headers,
            )
            if result is True:
                continue
            if isinstance(result, Request):
                request = result
                continue
            answer = _as_response(registration, result)
            return request, answer, index + 1
        return request, None, len(chain)

    def respond(
        self,
        chain: list[Registration],
        ran: int,
        request: Request,
        response: Response,
    ) -> Response:
        """Run `return_response` in reverse over the listeners that ran.

        A response that is replaced, or abandoned because a listener failed,
        has its body closed, so that a backend connection is not left open.
        """
        for registration in reversed(chain[:ran]):
            try:
                result = _call(
                    registration,
                    "return_response",
                    registration.listener.return_response,
                    request.method,
                    request.path,
                    request.data,
                    request.headers,
                    response,
                )
                if result is None:
                    continue
                replacement = _as_response(registration, result, allow_status=False)
            except Exception:
                close_body(response.body)
                raise
            if replacement.body is not response.body:
                close_body(response.body)
            response = replacement
        return response


def _call(
    registration: Registration, hook: str, method: Callable[..., Any], *args: Any
) -> Any:
    try:
        return method(*args)
    except Exception as exc:
        log.exception("listener %s raised in %s", registration.name, hook)
        raise ListenerFailed(
            f"listener {registration.name} failed in {hook}: {type(exc).__name__}"
        ) from exc


def _as_response(
    registration: Registration, result: object, allow_status: bool = True
) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, WerkzeugResponse):
        headers = Headers(result.headers)
        return Response(result.status_code, headers, result.get_data())
    if (
        allow_status
        and isinstance(result, int)
        and not isinstance(result, bool)
        and 100 <= result <= 599
    ):
        return Response(result, Headers({"Content-Length": "0"}), b"")
    raise InvalidListenerResult(
        f"listener {registration.name} returned {type(result).__name__}, "
        "which the listener protocol does not allow"
    )


def register(
    name: str,
    listener: Listener,
    service: str | EllipsisType | None = ...,
    order: int | EllipsisType = ...,
) -> Registration:
    """A registration for `listener`; service and order come from the
    listener's own `service` and `order` attributes unless given here."""
    if isinstance(service, EllipsisType):
        service = getattr(listener, "service", None)
    if isinstance(order, EllipsisType):
        order = int(getattr(listener, "order", 0))
    return Registration(name, listener, service, order)


def load_factory(reference: str) -> Registration:
    """Load a listener from `module:attribute`, a zero-argument factory."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ListenerLoadError(
            f"listener {reference!r} is not of the form module:attribute"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ListenerLoadError(
            f"cannot load listener {reference!r}: {exc}; check the module path"
        ) from exc
    return _instantiate(reference, factory)


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[Registration]:
    """Every listener that an installed distribution registers in `group`."""
    registrations = []
    for entry_point in entry_points(group=group):
        try:
            factory = entry_point.load()
        except Exception as exc:
            raise ListenerLoadError(
                f"cannot load listener entry point {entry_point.name!r} "
                f"({entry_point.value}): {exc}"
            ) from exc
        registrations.append(_instantiate(entry_point.name, factory))
    return registrations


def _instantiate(name: str, factory: Callable[[], object]) -> Registration:
    listener = factory()
    if not isinstance(listener, Listener):
        raise ListenerLoadError(
            f"listener {name!r} has no forward_request and return_response methods"
        )
    return register(name, listener)
