"""S3 CORS from each bucket's CORS configuration, as S3 applies it.

moto stores `PutBucketCors` but applies it only in part (it ignores the method
and the requested headers, and never refuses a preflight). This listener asks
the backend for the bucket's configuration on every S3 request that carries
`Origin`, and:

- answers a preflight (`OPTIONS` with `Origin` and
  `Access-Control-Request-Method`) with the first rule that matches the origin,
  the method and every requested header, or with a 403 `AccessForbidden` when
  none does or the bucket has no configuration;
- on any other request, sets the matching rule's headers on the response, and
  removes every `Access-Control-*` header when no rule matches: no
  configuration, no CORS headers.

Requests for a bucket that does not exist are left to the generic CORS
listener: an unsigned request to another service's REST path (a browser's
preflight carries no credentials) looks like an S3 path-style request.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from werkzeug.datastructures import Headers

from proxy.backend import Backend
from proxy.errors import ProxyError
from proxy.listener import ListenerContext
from proxy.listeners._aws import backend_request, caller
from proxy.listeners.cors import CorsClaimed
from proxy.messages import Body, Request, Response
from proxy.render import error_response
from proxy.services import REST_XML, s3_location

log = logging.getLogger(__name__)

NOT_ALLOWED = (
    "CORSResponse: This CORS request is not allowed. This is usually because the "
    "evalution of Origin, request method / Access-Control-Request-Method or "
    "Access-Control-Request-Headers are not whitelisted by the resource's CORS "
    "spec."
)
NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"


@dataclass(frozen=True)
class CorsRule:
    """One `CORSRule` of a bucket's configuration."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None


def parse_cors_configuration(document: bytes) -> list[CorsRule]:
    """The rules of a `GetBucketCors` answer, in order."""
    rules = []
    for element in ET.fromstring(document).iter():
        if _local(element.tag) != "CORSRule":
            continue
        values: dict[str, list[str]] = {}
        for child in element:
            values.setdefault(_local(child.tag), []).append((child.text or "").strip())
        max_age = values.get("MaxAgeSeconds", [""])[0]
        rules.append(
            CorsRule(
                allowed_origins=tuple(values.get("AllowedOrigin", ())),
                allowed_methods=tuple(values.get("AllowedMethod", ())),
                allowed_headers=tuple(values.get("AllowedHeader", ())),
                expose_headers=tuple(values.get("ExposeHeader", ())),
                max_age_seconds=int(max_age) if max_age.isdigit() else None,
            )
        )
    return rules


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def wildcard_match(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """Whether `value` matches `pattern`, in which `*` stands for any text."""
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern:
        return pattern == value
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def requested_headers(value: str | None) -> list[str]:
    """The header names of `Access-Control-Request-Headers`."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def match_rule(
    rules: Sequence[CorsRule],
    origin: str,
    method: str,
    headers: Sequence[str] = (),
) -> tuple[CorsRule, str] | None:
    """The first rule that allows `origin`, `method` and every header in
    `headers`, with the `AllowedOrigin` that matched; None when none does."""
    for rule in rules:
        allowed = next(
            (o for o in rule.allowed_origins if wildcard_match(o, origin)), None
        )
        if allowed is None or method not in rule.allowed_methods:
            continue
        if all(
            any(
                wildcard_match(p, h, case_sensitive=False) for p in rule.allowed_headers
            )
            for h in headers
        ):
            return rule, allowed
    return None


def cors_headers(
    rule: CorsRule, allowed_origin: str, origin: str, preflight_headers: str = ""
) -> Headers:
    """The response headers S3 sends for a request that `rule` allows.

    A rule that allows any origin (`*`) answers `*` and no credentials; one
    that names origins answers the request's origin and allows credentials.
    `preflight_headers` is the preflight's `Access-Control-Request-Headers`.
    """
    headers = Headers()
    if allowed_origin == "*":
        headers["Access-Control-Allow-Origin"] = "*"
    else:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
    headers["Access-Control-Allow-Methods"] = ", ".join(rule.allowed_methods)
    if preflight_headers:
        headers["Access-Control-Allow-Headers"] = preflight_headers
    if rule.expose_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
    if rule.max_age_seconds is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
    headers["Vary"] = VARY
    return headers


class _BucketCors(CorsClaimed):
    """Request headers of a request to a bucket, with the bucket's rules."""

    rules: list[CorsRule]


class S3CorsListener:
    """Applies each bucket's CORS configuration to S3 requests."""

    service: str | None = "s3"
    # Before the generic CORS listener (100), so that preflights reach this one.
    order = 50

    def __init__(self) -> None:
        self._backend: Backend | None = None

    def start(self, context: ListenerContext) -> None:
        """Keep the backend that holds the buckets' configurations."""
        self._backend = context.backend

    def stop(self) -> None:
        """Nothing runs in the background."""

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> bool | Response | Request:
        origin = headers.get("Origin")
        if not origin or self._backend is None:
            return True
        raw_path, _, query = path.partition("?")
        bucket, _ = s3_location(headers.get("Host", ""), raw_path)
        if not bucket:
            return True
        rules = self._configuration(bucket, headers, query)
        if rules is None:
            return True

        if method == "OPTIONS":
            return _preflight(rules, origin, headers)
        claimed = _BucketCors(headers)
        claimed.rules = rules
        return Request(method, path, data, claimed)

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Response | None:
        if not isinstance(headers, _BucketCors):
            return None
        for name in {n for n, _ in response.headers if _is_cors(n)}:
            del response.headers[name]
        origin = headers.get("Origin", "")
        found = match_rule(headers.rules, origin, method)
        if found is not None:
            rule, allowed = found
            for name, value in cors_headers(rule, allowed, origin).items():
                response.headers[name] = value
        return response

    def _configuration(
        self, bucket: str, headers: Headers, query: str
    ) -> list[CorsRule] | None:
        """The bucket's rules, [] without a configuration, None when the
        bucket does not exist."""
        assert self._backend is not None
        request = backend_request(
            caller(headers, query), "s3", "GET", f"/{quote(bucket)}?cors"
        )
        try:
            answer = self._backend.send(request)
            content = answer.content
        except ProxyError as exc:
            # The request itself will meet the same backend and its error.
            log.warning("GetBucketCors for %s failed: %s", bucket, exc)
            return None
        if answer.status_code == 200:
            return parse_cors_configuration(content)
        if b"NoSuchCORSConfiguration" in content:
            return []
        if b"NoSuchBucket" not in content:
            log.warning(
                "GetBucketCors for %s answered %d; CORS left to the generic listener",
                bucket,
                answer.status_code,
            )
        return None


def _preflight(rules: list[CorsRule], origin: str, headers: Headers) -> Response:
    wanted = headers.get("Access-Control-Request-Method", "")
    if not wanted:
        return error_response(
            REST_XML, 400, "BadRequest", "Invalid Access-Control-Request-Method: null"
        )
    if not rules:
        return error_response(REST_XML, 403, "AccessForbidden", NOT_ENABLED)
    requested = headers.get("Access-Control-Request-Headers", "")
    found = match_rule(rules, origin, wanted, requested_headers(requested))
    if found is None:
        return error_response(REST_XML, 403, "AccessForbidden", NOT_ALLOWED)
    rule, allowed = found
    answer = cors_headers(rule, allowed, origin, requested)
    answer["Content-Length"] = "0"
    return Response(200, answer, b"")


def _is_cors(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("access-control-") or lowered == "vary"
