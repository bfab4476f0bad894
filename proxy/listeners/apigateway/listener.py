"""The API Gateway invocation listener: answers requests to deployed REST APIs,
which moto stores but does not serve.

It reads each API's stage, resources, methods and integrations from moto's
API Gateway through the proxy's backend, so it works with moto in the proxy's
process and with a moto server at a URL alike.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from werkzeug.datastructures import Headers

from proxy.backend import Backend
from proxy.errors import ProxyError
from proxy.listener import ListenerContext
from proxy.listeners.apigateway.backend_calls import BackendCalls
from proxy.listeners.apigateway.errors import (
    ApiNotFound,
    Forbidden,
    IntegrationFailed,
    InvocationError,
    MissingAuthenticationToken,
    StageNotFound,
    error_response,
)
from proxy.listeners.apigateway.integrations import Call, Integrations
from proxy.listeners.apigateway.routing import (
    Invocation,
    is_invocation,
    match_resource,
    parse_invocation,
    pick_method,
)
from proxy.listeners.apigateway.templates import MethodRequest
from proxy.messages import Body, Response, body_bytes
from proxy.services import INVOKE

log = logging.getLogger(__name__)

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account


class ApiGatewayListener:
    """Serves `/restapis/{id}/{stage}/_user_request_/{path}` and the host
    `{id}.execute-api.<proxy host>`; every other request goes on unchanged.

    It needs the proxy's backend: the server hands it over in `start`, or a
    caller that builds the listener itself gives it here.
    """

    service: str | None = INVOKE
    order = 10  # before the CORS listener: an API answers its own preflights

    def __init__(self, backend: Backend | None = None, region: str = REGION) -> None:
        self.region = region
        self._integrations: Integrations | None = None
        if backend is not None:
            self._integrations = Integrations(BackendCalls(backend))

    def start(self, context: ListenerContext) -> None:
        """Read API definitions from, and run AWS integrations on, the
        proxy's backend."""
        self._integrations = Integrations(BackendCalls(context.backend))

    def stop(self) -> None:
        """Close the connections to HTTP integrations."""
        if self._integrations is not None:
            self._integrations.http.close()

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> bool | Response:
        host = headers.get("Host", "")
        if not is_invocation(path, host):
            return True
        invocation = parse_invocation(path, host)
        if invocation is None:
            return True

        request_id = str(uuid.uuid4())
        try:
            return self._invoke(
                method, invocation, body_bytes(data), headers, request_id
            )
        except InvocationError as exc:
            log.info(
                "%s %s on API %s stage %s: %s",
                method,
                invocation.path,
                invocation.api_id,
                invocation.stage,
                exc.message,
            )
            return error_response(exc, request_id)
        except ProxyError as exc:
            # The backend is down or slow: say so in API Gateway's shape.
            failure = InvocationError(exc.message)
            failure.status, failure.error_type = exc.status, exc.code
            return error_response(failure, request_id)

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Response | None:
        return None

    def _invoke(
        self,
        method: str,
        invocation: Invocation,
        body: bytes,
        headers: Headers,
        request_id: str,
    ) -> Response:
        if self._integrations is None:
            raise IntegrationFailed(
                "the API Gateway listener has no backend: it gets one when the "
                "proxy server starts it"
            )
        apigateway = self._integrations.calls.client("apigateway", self.region)
        stage = _stage(apigateway, invocation)
        resources = _resources(apigateway, invocation.api_id)

        match = match_resource(resources, invocation.path)
        definition = pick_method(match.resource, method) if match else None
        if match is None or definition is None:
            raise MissingAuthenticationToken(
                f"Missing Authentication Token: REST API {invocation.api_id} has no "
                f"resource and method for {method} {invocation.path}"
            )
        if definition.get("apiKeyRequired"):
            _check_api_key(apigateway, invocation, headers.get("x-api-key"))
        integration = definition.get("methodIntegration")
        if not integration:
            raise IntegrationFailed(
                f"{method} {match.resource.get('path')} has no integration; "
                "put one with PutIntegration and deploy again"
            )

        request = MethodRequest(
            body=body.decode("utf-8", "replace"),
            path=match.path_parameters,
            querystring=invocation.querystring,
            header=dict(headers.items()),
        )
        call = Call(
            method=method,
            request=request,
            content_type=headers.get("Content-Type"),
            context=_context(invocation, match.resource, method, headers, request_id),
            stage_variables=dict(stage.get("variables") or {}),
            raw_headers=headers,
            raw_body=body,
        )
        return self._integrations.invoke(integration, call)


def _stage(apigateway: Any, invocation: Invocation) -> Mapping[str, Any]:
    try:
        stage: Mapping[str, Any] = apigateway.get_stage(
            restApiId=invocation.api_id, stageName=invocation.stage
        )
        return stage
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NotFoundException":
            raise
    try:
        apigateway.get_rest_api(restApiId=invocation.api_id)
    except ClientError as exc:
        raise ApiNotFound(
            f"no REST API has the id {invocation.api_id!r}; "
            "invoke /restapis/{id}/{stage}/_user_request_/{path}"
        ) from exc
    raise StageNotFound(
        f"REST API {invocation.api_id} has no stage {invocation.stage!r}; "
        "create a deployment with that stage name"
    )


def _resources(apigateway: Any, api_id: str) -> list[Mapping[str, Any]]:
    resources: list[Mapping[str, Any]] = []
    position = None
    while True:
        kwargs: dict[str, Any] = {"restApiId": api_id, "limit": 500}
        if position:
            kwargs["position"] = position
        page = apigateway.get_resources(**kwargs)
        resources.extend(page.get("items", []))
        position = page.get("position")
        if not position:
            return resources


def _check_api_key(apigateway: Any, invocation: Invocation, value: str | None) -> None:
    if not value:
        raise Forbidden("Forbidden")
    keys = apigateway.get_api_keys(includeValues=True).get("items", [])
    key = next((k for k in keys if k.get("value") == value and k.get("enabled")), None)
    if key is None:
        raise Forbidden("Forbidden")
    plans = apigateway.get_usage_plans(keyId=key["id"]).get("items", [])
    for plan in plans:
        for stage in plan.get("apiStages", []):
            if (stage.get("apiId"), stage.get("stage")) == (
                invocation.api_id,
                invocation.stage,
            ):
                return
    raise Forbidden("Forbidden")


def _context(
    invocation: Invocation,
    resource: Mapping[str, Any],
    method: str,
    headers: Headers,
    request_id: str,
) -> dict[str, Any]:
    now = time.time()
    forwarded = headers.get("X-Forwarded-For", "")
    return {
        "accountId": ACCOUNT_ID,
        "apiId": invocation.api_id,
        "domainName": headers.get("Host", ""),
        "extendedRequestId": request_id,
        "httpMethod": method,
        "path": f"/{invocation.stage}{invocation.path}",
        "protocol": "HTTP/1.1",
        "requestId": request_id,
        "requestTime": datetime.fromtimestamp(now, UTC).strftime(
            "%d/%b/%Y:%H:%M:%S +0000"
        ),
        "requestTimeEpoch": int(now * 1000),
        "resourceId": resource.get("id", ""),
        "resourcePath": resource.get("path", "/"),
        "stage": invocation.stage,
        "identity": {
            # The listener protocol carries no peer address; a client behind a
            # proxy names itself in X-Forwarded-For.
            "sourceIp": forwarded.split(",")[0].strip() or "127.0.0.1",
            "userAgent": headers.get("User-Agent", ""),
            "apiKey": headers.get("x-api-key", ""),
            "accountId": ACCOUNT_ID,
        },
    }
