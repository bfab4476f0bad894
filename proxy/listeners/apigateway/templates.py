"""Mapping templates: Velocity (VTL) as API Gateway evaluates it, with the
`$input`, `$util`, `$context` and `$stageVariables` variables.

The language is `vtl`'s; this module supplies the variables API Gateway
defines and a small JSONPath for `$input.path` and `$input.json`. Plain
functions and objects, no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from proxy.listeners.apigateway import vtl
from proxy.listeners.apigateway.errors import TemplateFailed


class JsonPathError(ValueError):
    """A JSONPath expression outside the subset API Gateway templates use."""


_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_$][\w$-]*)      # .name
      | \.\*|\[\*\]                          # .* or [*]
      | \[(?P<index>-?\d+)\]                 # [0]
      | \[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]   # ['key']
    """,
    re.VERBOSE,
)


def json_path(document: Any, expression: str) -> Any:
    """The value at `expression` (`$`, `$.a.b`, `$['a']`, `$.a[0]`, `$.a[*].b`)
    in `document`, or None when nothing is there."""
    expression = expression.strip()
    if not expression.startswith("$"):
        raise JsonPathError(f"JSONPath {expression!r} does not start with $")
    values = [document]
    many = False
    position = 1
    while position < len(expression):
        step = _STEP.match(expression, position)
        if step is None:
            raise JsonPathError(
                f"JSONPath {expression!r}: cannot read from {expression[position:]!r}"
            )
        position = step.end()
        values = _apply(values, step)
        many = many or step.group(0) in (".*", "[*]")
    if many:
        return values
    return values[0] if values else None


def _apply(values: list[Any], step: re.Match[str]) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if step.group("name") is not None or step.group("key") is not None:
            name = step.group("name") or step.group("key")
            if isinstance(value, dict) and name in value:
                found.append(value[name])
        elif step.group("index") is not None:
            index = int(step.group("index"))
            if isinstance(value, list) and -len(value) <= index < len(value):
                found.append(value[index])
        elif isinstance(value, dict):
            found.extend(value.values())
        elif isinstance(value, list):
            found.extend(value)
    return found


@dataclass
class MethodRequest:
    """What a template may read of the client's request."""

    body: str = ""
    path: dict[str, str] = field(default_factory=dict)
    querystring: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)


class InputVariable:
    """`$input`: the method request's body and parameters."""

    def __init__(self, request: MethodRequest) -> None:
        self.body = request.body
        self._request = request
        self._parsed: Any = None
        self._is_parsed = False

    def _document(self) -> Any:
        if not self._is_parsed:
            self._is_parsed = True
            try:
                self._parsed = json.loads(self.body) if self.body.strip() else {}
            except ValueError:
                self._parsed = None
        return self._parsed

    def path(self, expression: str) -> Any:
        """The object at a JSONPath of the JSON body, for use in the template."""
        return json_path(self._document(), expression)

    def json(self, expression: str) -> str:
        """The JSON text of the value at a JSONPath of the body."""
        return json.dumps(json_path(self._document(), expression))

    def params(self, name: str | None = None) -> Any:
        """All parameters by location, or one by name (path, then query string,
        then header), as API Gateway looks them up."""
        request = self._request
        if name is None:
            return {
                "path": dict(request.path),
                "querystring": dict(request.querystring),
                "header": dict(request.header),
            }
        for location in (request.path, request.querystring):
            if name in location:
                return location[name]
        for header, value in request.header.items():
            if header.lower() == name.lower():
                return value
        return ""


class UtilVariable:
    """`$util`: the helper functions API Gateway templates can call, under
    their VTL (camel-case) names."""

    def escapeJavaScript(self, text: Any) -> str:
        """`text` escaped for a JavaScript (and JSON) string literal."""
        escaped = json.dumps(_text(text))[1:-1]
        return escaped.replace("'", "\\'")

    def parseJson(self, text: Any) -> Any:
        """The object that the JSON `text` holds."""
        return json.loads(_text(text))

    def urlEncode(self, text: Any) -> str:
        """`text` encoded as an application/x-www-form-urlencoded value."""
        return quote_plus(_text(text))

    def urlDecode(self, text: Any) -> str:
        """The inverse of `urlEncode`."""
        return unquote_plus(_text(text))

    def base64Encode(self, text: Any) -> str:
        """`text` (UTF-8) in base64."""
        return base64.b64encode(_text(text).encode()).decode()

    def base64Decode(self, text: Any) -> str:
        """The UTF-8 text that the base64 `text` holds."""
        return base64.b64decode(_text(text)).decode("utf-8", "replace")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


_cache: dict[str, list[vtl.Node]] = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 256


def _compiled(template: str) -> list[vtl.Node]:
    with _cache_lock:
        compiled = _cache.get(template)
    if compiled is not None:
        return compiled
    try:
        compiled = vtl.parse(template)
    except vtl.VtlSyntaxError as exc:
        raise TemplateFailed(f"the mapping template does not parse: {exc}") from exc
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[template] = compiled
    return compiled


def render(
    template: str,
    request: MethodRequest,
    context: Mapping[str, Any],
    stage_variables: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Evaluate one mapping template for one request.

    `context` becomes `$context`, `stage_variables` `$stageVariables`; `extra`
    adds or replaces variables (the integration response templates see the
    integration's response as `$input`).
    """
    namespace: dict[str, Any] = {
        "input": InputVariable(request),
        "util": UtilVariable(),
        "context": dict(context),
        "stageVariables": dict(stage_variables),
    }
    namespace.update(extra or {})
    compiled = _compiled(template)
    try:
        return vtl.evaluate(compiled, namespace)
    except vtl.VtlError as exc:
        raise TemplateFailed(f"the mapping template failed: {exc}") from exc
