"""Parameter mapping, template choice and integration response selection, as
API Gateway defines them for non-proxy integrations. Plain functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.listeners.apigateway.errors import InvocationError
from proxy.listeners.apigateway.templates import MethodRequest, json_path

DEFAULT_CONTENT_TYPE = "application/json"


class UnsupportedMediaType(InvocationError):
    """The integration maps only other content types and passes none through."""

    status = 415
    error_type = "UnsupportedMediaTypeException"


@dataclass
class IntegrationRequestParameters:
    """The header, query string and path values sent to the integration."""

    header: dict[str, str] = field(default_factory=dict)
    querystring: dict[str, str] = field(default_factory=dict)
    path: dict[str, str] = field(default_factory=dict)


def map_request_parameters(
    mapping: Mapping[str, str],
    request: MethodRequest,
    stage_variables: Mapping[str, str],
    context: Mapping[str, Any],
) -> IntegrationRequestParameters:
    """Evaluate `integration.request.<where>.<name>` = `<source>` mappings.

    A source is a `'literal'`, `method.request.{path,querystring,header}.name`,
    `stageVariables.name` or `context.name`; a source with no value is skipped.
    """
    mapped = IntegrationRequestParameters()
    for target, source in mapping.items():
        prefix, _, rest = target.partition("integration.request.")
        where, _, name = rest.partition(".")
        if prefix or where not in ("header", "querystring", "path") or not name:
            continue
        value = _source_value(source, request, stage_variables, context)
        if value is not None:
            getattr(mapped, where)[name] = value
    return mapped


def _source_value(
    source: str,
    request: MethodRequest,
    stage_variables: Mapping[str, str],
    context: Mapping[str, Any],
) -> str | None:
    if len(source) >= 2 and source.startswith("'") and source.endswith("'"):
        return source[1:-1]
    if source.startswith("method.request."):
        where, _, name = source[len("method.request.") :].partition(".")
        values: Mapping[str, str] = {
            "path": request.path,
            "querystring": request.querystring,
            "header": {k.lower(): v for k, v in request.header.items()},
        }.get(where, {})
        return values.get(name.lower() if where == "header" else name)
    if source.startswith("stageVariables."):
        return stage_variables.get(source.partition(".")[2])
    if source.startswith("context."):
        value: Any = context
        for part in source.split(".")[1:]:
            value = value.get(part) if isinstance(value, Mapping) else None
        return None if value is None else str(value)
    return None


_STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.+-]+)\}")


def expand_uri(
    uri: str, stage_variables: Mapping[str, str], path: Mapping[str, str]
) -> str:
    """An integration URI with `${stageVariables.x}` and `{param}` filled in."""
    uri = _STAGE_VARIABLE.sub(lambda m: stage_variables.get(m.group(1), ""), uri)

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        return path.get(name, path.get(name.rstrip("+"), match.group(0)))

    return _PLACEHOLDER.sub(placeholder, uri)


def choose_template(
    templates: Mapping[str, str] | None,
    content_type: str | None,
    passthrough: str = "WHEN_NO_MATCH",
) -> str | None:
    """The request template for the request's content type, or None to pass
    the body through unchanged.

    Raises UnsupportedMediaType when the passthrough behaviour forbids passing
    an unmapped content type through.
    """
    templates = templates or {}
    wanted = (content_type or DEFAULT_CONTENT_TYPE).split(";")[0].strip().lower()
    for name, template in templates.items():
        if name.lower() == wanted:
            return template
    if passthrough.upper() == "NEVER" or (
        passthrough.upper() == "WHEN_NO_TEMPLATES" and templates
    ):
        raise UnsupportedMediaType("Unsupported Media Type")
    if not content_type and templates:
        return next(iter(templates.values()))
    return None


def response_template(templates: Mapping[str, str] | None) -> str | None:
    """The integration response's template (the JSON one when there are
    several, since the method response has no content negotiation here)."""
    templates = templates or {}
    return templates.get(DEFAULT_CONTENT_TYPE) or next(iter(templates.values()), None)


def select_integration_response(
    responses: Mapping[str, Mapping[str, Any]] | None, status: int
) -> Mapping[str, Any] | None:
    """The integration response whose selection pattern matches the
    integration's status code, else the default one (no pattern)."""
    default = None
    for response in (responses or {}).values():
        pattern = response.get("selectionPattern")
        if not pattern:
            if default is None or str(response.get("statusCode")) == "200":
                default = response
            continue
        if re.fullmatch(pattern, str(status)):
            return response
    return default


def map_response_headers(
    mapping: Mapping[str, str] | None,
    integration_headers: Mapping[str, str],
    integration_body: Any,
) -> dict[str, str]:
    """Evaluate `method.response.header.<name>` = `<source>` mappings, where a
    source is a `'literal'`, `integration.response.header.name` or
    `integration.response.body[.json.path]`."""
    headers: dict[str, str] = {}
    lowered = {k.lower(): v for k, v in integration_headers.items()}
    for target, source in (mapping or {}).items():
        prefix, _, name = target.partition("method.response.header.")
        if prefix or not name:
            continue
        value: Any = None
        if len(source) >= 2 and source.startswith("'") and source.endswith("'"):
            value = source[1:-1]
        elif source.startswith("integration.response.header."):
            value = lowered.get(source.rsplit(".", 1)[1].lower())
        elif source.startswith("integration.response.body"):
            rest = source[len("integration.response.body") :]
            value = json_path(integration_body, "$" + rest) if rest else None
        if value is not None:
            headers[name] = value if isinstance(value, str) else str(value)
    return headers
