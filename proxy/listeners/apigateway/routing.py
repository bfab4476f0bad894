"""Which deployed REST API, stage, resource and method an invocation is for.

Plain functions on plain data, no I/O. Two URL shapes reach a deployed API:

- path style: `/restapis/{id}/{stage}/_user_request_/{path}` on the proxy;
- host style: `/{stage}/{path}` on the host `{id}.execute-api.<proxy host>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

USER_REQUEST = "_user_request_"

_PATH_STYLE = re.compile(r"^/restapis/([^/]+)/([^/]+)/_user_request_(/.*)?$")
_HOST_STYLE = re.compile(r"^([a-z0-9]+)\.execute-api\.", re.IGNORECASE)


@dataclass(frozen=True)
class Invocation:
    """The parts of an invocation URL: API id, stage, resource path, query."""

    api_id: str
    stage: str
    path: str
    query: tuple[tuple[str, str], ...] = ()

    @property
    def querystring(self) -> dict[str, str]:
        """The query parameters, the last value of a repeated one winning."""
        return dict(self.query)


def parse_invocation(target: str, host: str) -> Invocation | None:
    """The invocation that the request target and Host name, or None when the
    request is not an invocation of a deployed API."""
    raw_path, _, query = target.partition("?")
    pairs = tuple(parse_qsl(query, keep_blank_values=True))

    match = _PATH_STYLE.match(raw_path)
    if match:
        api_id, stage, rest = match.groups()
        return Invocation(api_id, unquote(stage), rest or "/", pairs)

    match = _HOST_STYLE.match(host)
    if match:
        stage, _, rest = raw_path.lstrip("/").partition("/")
        return Invocation(match.group(1), unquote(stage), "/" + rest, pairs)
    return None


def is_invocation(target: str, host: str) -> bool:
    """A cheap test run on every request before any parsing."""
    return f"/{USER_REQUEST}" in target or ".execute-api." in host


@dataclass(frozen=True)
class ResourceMatch:
    """The resource a path matched, and the path parameters it bound."""

    resource: Mapping[str, Any]
    path_parameters: dict[str, str]


def match_resource(
    resources: Iterable[Mapping[str, Any]], path: str
) -> ResourceMatch | None:
    """The resource whose path template matches `path`, preferring literal
    segments over `{param}` and `{param}` over a greedy `{proxy+}`, as API
    Gateway does."""
    segments = [unquote(s) for s in path.strip("/").split("/") if s]
    best: tuple[tuple[int, ...], ResourceMatch] | None = None
    for resource in resources:
        template = [s for s in str(resource.get("path", "/")).split("/") if s]
        bound = _bind(template, segments)
        if bound is None:
            continue
        rank = (*[_segment_rank(s) for s in template], 3)
        if best is None or rank < best[0]:
            best = (rank, ResourceMatch(resource, bound))
    return best[1] if best else None


def _segment_rank(segment: str) -> int:
    if segment.endswith("+}"):
        return 2
    if segment.startswith("{"):
        return 1
    return 0


def _bind(template: list[str], segments: list[str]) -> dict[str, str] | None:
    bound: dict[str, str] = {}
    for index, part in enumerate(template):
        if part.startswith("{") and part.endswith("+}"):
            rest = segments[index:]
            if not rest or index != len(template) - 1:
                return None
            bound[part[1:-2]] = "/".join(rest)
            return bound
        if index >= len(segments):
            return None
        if part.startswith("{") and part.endswith("}"):
            bound[part[1:-1]] = segments[index]
        elif part != segments[index]:
            return None
    return bound if len(template) == len(segments) else None


def pick_method(resource: Mapping[str, Any], method: str) -> Mapping[str, Any] | None:
    """The resource's method for the HTTP `method`, else its ANY method."""
    methods: Mapping[str, Any] = resource.get("resourceMethods") or {}
    return methods.get(method.upper()) or methods.get("ANY")
