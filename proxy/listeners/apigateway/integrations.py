"""The integrations a method can call: MOCK, HTTP, HTTP_PROXY and AWS service
actions, the last executed through the proxy's backend.

Each integration takes the matched method's definition and the method request,
and gives the method response the client receives.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from werkzeug.datastructures import Headers

from proxy.hop import end_to_end
from proxy.listeners.apigateway.backend_calls import BackendCalls
from proxy.listeners.apigateway.errors import (
    IntegrationFailed,
    IntegrationTimeout,
    NoIntegrationResponse,
)
from proxy.listeners.apigateway.mapping import (
    DEFAULT_CONTENT_TYPE,
    choose_template,
    expand_uri,
    map_request_parameters,
    map_response_headers,
    response_template,
    select_integration_response,
)
from proxy.listeners.apigateway.templates import MethodRequest, render
from proxy.messages import Response
from proxy.services import QUERY_SERVICES, TARGET_PREFIXES

log = logging.getLogger(__name__)

HTTP_TIMEOUT_SECONDS = 29.0  # API Gateway's own integration timeout

# Headers the proxy sets itself on the way to an HTTP integration.
_NOT_FORWARDED = frozenset({"host", "content-length", "x-api-key"})
_JSON_TARGETS = {service: prefix for prefix, service in TARGET_PREFIXES.items()}


@dataclass
class Call:
    """Everything an integration needs about one invocation."""

    method: str
    request: MethodRequest
    content_type: str | None
    context: dict[str, Any]
    stage_variables: dict[str, str]
    raw_headers: Headers = field(default_factory=Headers)
    raw_body: bytes = b""


@dataclass
class IntegrationResult:
    """What the integration answered, before the integration response."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Integrations:
    """Runs the integration of a method; holds the HTTP session and the
    backend calls that integrations share."""

    def __init__(self, calls: BackendCalls) -> None:
        self.calls = calls
        self.http = requests.Session()
        self.http.trust_env = False

    def invoke(self, integration: Mapping[str, Any], call: Call) -> Response:
        """The method response for `call` through `integration`."""
        kind = str(integration.get("type", "")).upper()
        if kind == "HTTP_PROXY":
            return self._http_proxy(integration, call)
        if kind == "MOCK":
            body = self._request_body(integration, call)
            status = _mock_status(body)
            return _method_response(
                integration, call, IntegrationResult(status, {}, b"")
            )
        if kind == "HTTP":
            result = self._http(integration, call)
            return _method_response(integration, call, result)
        if kind == "AWS":
            result = self._aws(integration, call)
            return _method_response(integration, call, result)
        raise IntegrationFailed(
            f"integration type {kind or 'none'!r} is not served by this proxy; "
            "use MOCK, HTTP, HTTP_PROXY or AWS"
        )

    def _request_body(self, integration: Mapping[str, Any], call: Call) -> str:
        template = choose_template(
            integration.get("requestTemplates"),
            call.content_type,
            str(integration.get("passthroughBehavior") or "WHEN_NO_MATCH"),
        )
        if template is None:
            return call.request.body
        return render(template, call.request, call.context, call.stage_variables)

    def _http_proxy(self, integration: Mapping[str, Any], call: Call) -> Response:
        mapped = map_request_parameters(
            integration.get("requestParameters") or {},
            call.request,
            call.stage_variables,
            call.context,
        )
        uri = expand_uri(
            _uri(integration),
            call.stage_variables,
            {**call.request.path, **mapped.path},
        )
        query = {**call.request.querystring, **mapped.querystring}
        headers = {
            name: value
            for name, value in end_to_end(call.raw_headers.items())
            if name.lower() not in _NOT_FORWARDED
        }
        headers.update(mapped.header)
        method = str(integration.get("httpMethod") or call.method).upper()
        if method == "ANY":
            method = call.method
        result = self._send_http(method, uri, query, headers, call.raw_body)
        response_headers = Headers(end_to_end(result.headers.items()))
        response_headers.pop("Content-Encoding", None)
        response_headers["Content-Length"] = str(len(result.body))
        return Response(result.status, response_headers, result.body)

    def _http(self, integration: Mapping[str, Any], call: Call) -> IntegrationResult:
        mapped = map_request_parameters(
            integration.get("requestParameters") or {},
            call.request,
            call.stage_variables,
            call.context,
        )
        uri = expand_uri(_uri(integration), call.stage_variables, mapped.path)
        body = self._request_body(integration, call).encode()
        headers = {"Content-Type": call.content_type or DEFAULT_CONTENT_TYPE}
        headers.update(mapped.header)
        method = str(integration.get("httpMethod") or call.method).upper()
        if method == "ANY":
            method = call.method
        return self._send_http(method, uri, mapped.querystring, headers, body)

    def _send_http(
        self,
        method: str,
        uri: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> IntegrationResult:
        if urlsplit(uri).scheme not in ("http", "https"):
            raise IntegrationFailed(f"integration URI {uri!r} is not an http(s) URL")
        try:
            answer = self.http.request(
                method,
                uri,
                params=dict(query) or None,
                headers=dict(headers),
                data=body or None,
                timeout=HTTP_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise IntegrationTimeout("Endpoint request timed out") from exc
        except requests.RequestException as exc:
            log.warning("HTTP integration %s %s failed: %s", method, uri, exc)
            raise IntegrationFailed(
                f"the HTTP integration at {uri} cannot be reached"
            ) from exc
        return IntegrationResult(answer.status_code, answer.headers, answer.content)

    def _aws(self, integration: Mapping[str, Any], call: Call) -> IntegrationResult:
        mapped = map_request_parameters(
            integration.get("requestParameters") or {},
            call.request,
            call.stage_variables,
            call.context,
        )
        uri = expand_uri(_uri(integration), call.stage_variables, mapped.path)
        body = self._request_body(integration, call).encode()
        service = aws_service_request(
            uri,
            str(integration.get("httpMethod") or "POST").upper(),
            mapped.querystring,
            mapped.header,
            call.content_type,
        )
        answer = self.calls.send_signed(
            service.service,
            service.region,
            service.method,
            service.target,
            service.headers,
            body,
        )
        return IntegrationResult(
            answer.status_code, dict(answer.headers.items()), answer.content
        )


def _uri(integration: Mapping[str, Any]) -> str:
    uri = integration.get("uri")
    if not uri:
        raise IntegrationFailed("the integration has no URI")
    return str(uri)


def _mock_status(body: str) -> int:
    try:
        document = json.loads(body) if body.strip() else {}
        return int(document.get("statusCode", 200))
    except (ValueError, TypeError, AttributeError):
        return 200


def _method_response(
    integration: Mapping[str, Any], call: Call, result: IntegrationResult
) -> Response:
    selected = select_integration_response(
        integration.get("integrationResponses"), result.status
    )
    if selected is None:
        # API Gateway's own words; the log says what to configure.
        log.warning(
            "%s %s: the integration answered %d and no integration response "
            "matches it; put one without a selection pattern as the default",
            call.method,
            call.context.get("resourcePath"),
            result.status,
        )
        raise NoIntegrationResponse("Internal server error")

    text = result.body.decode("utf-8", "replace")
    template = response_template(selected.get("responseTemplates"))
    if template is None:
        body = result.body
    else:
        integration_request = MethodRequest(
            body=text,
            path=call.request.path,
            querystring=call.request.querystring,
            header=call.request.header,
        )
        body = render(
            template, integration_request, call.context, call.stage_variables
        ).encode()

    try:
        document = json.loads(text) if text.strip() else None
    except ValueError:
        document = None
    headers = Headers({"Content-Type": DEFAULT_CONTENT_TYPE})
    for name, value in map_response_headers(
        selected.get("responseParameters"), result.headers, document
    ).items():
        headers[name] = value
    headers["Content-Length"] = str(len(body))
    headers["x-amzn-RequestId"] = str(call.context.get("requestId", ""))
    return Response(int(selected.get("statusCode") or 200), headers, body)


@dataclass(frozen=True)
class ServiceRequest:
    """An AWS API request that an AWS integration URI describes."""

    service: str
    region: str
    method: str
    target: str
    headers: dict[str, str]


_AWS_URI = re.compile(
    r"^arn:aws[a-z-]*:apigateway:(?P<region>[^:]+):(?P<service>[^:]+):"
    r"(?P<kind>action|path)/(?P<rest>.*)$"
)


def aws_service_request(
    uri: str,
    http_method: str,
    querystring: Mapping[str, str],
    headers: Mapping[str, str],
    content_type: str | None = None,
) -> ServiceRequest:
    """The request an AWS integration URI stands for.

    `arn:aws:apigateway:{region}:{service}:action/{Action}` calls an action:
    JSON-protocol services (DynamoDB, Kinesis) get it in `X-Amz-Target`, query
    services (SQS, SNS) in `Action=`. `...:path/{path}` calls the REST path as
    it is (S3 objects, SQS queue URLs), with the method request's
    `content_type` unless a mapped header sets one.
    """
    match = _AWS_URI.match(uri)
    if match is None:
        raise IntegrationFailed(
            f"AWS integration URI {uri!r} is not "
            "arn:aws:apigateway:{region}:{service}:action/{Action} or .../path/{path}"
        )
    region, service, kind, rest = match.group("region", "service", "kind", "rest")
    service = service.split(".")[0]  # `s3.amazonaws.com`-style subdomains
    sent = dict(headers)
    query = dict(querystring)

    if kind == "action":
        action = rest.split("&")[0]
        if service not in QUERY_SERVICES and service in _JSON_TARGETS:
            version = "1.0" if service == "dynamodb" else "1.1"
            sent.setdefault("Content-Type", f"application/x-amz-json-{version}")
            sent["X-Amz-Target"] = f"{_JSON_TARGETS[service]}.{action}"
            target = "/"
        else:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            target = "/?" + urlencode({"Action": action, **query})
            query = {}
        method = "POST"
    else:
        target = "/" + rest.lstrip("/")
        method = http_method
        if service in QUERY_SERVICES:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif content_type:
            sent.setdefault("Content-Type", content_type)

    if query:
        target += ("&" if "?" in target else "?") + urlencode(query)
    return ServiceRequest(service, region, method, target, sent)
