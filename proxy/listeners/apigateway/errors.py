"""The errors an invocation can end in, shaped as API Gateway sends them: a
JSON body `{"message": ...}` and the error type in `x-amzn-ErrorType`."""

from __future__ import annotations

import json

from werkzeug.datastructures import Headers

from proxy.messages import Response


class InvocationError(Exception):
    """Root of the errors an invocation of a deployed REST API can end in."""

    status = 500
    error_type = "InternalServerErrorException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiNotFound(InvocationError):
    """No REST API has the id in the URL."""

    status = 404
    error_type = "NotFoundException"


class StageNotFound(InvocationError):
    """The REST API has no stage of the name in the URL."""

    status = 404
    error_type = "NotFoundException"


class MissingAuthenticationToken(InvocationError):
    """No resource and method match; API Gateway answers this way because the
    request might be a signed call of a route it cannot see."""

    status = 403
    error_type = "MissingAuthenticationTokenException"


class Forbidden(InvocationError):
    """The method requires an API key and the request has no valid one."""

    status = 403
    error_type = "ForbiddenException"


class TemplateFailed(InvocationError):
    """A mapping template does not parse or fails while it runs."""

    status = 500
    error_type = "InternalServerErrorException"


class IntegrationFailed(InvocationError):
    """The integration cannot be called: bad URI, unreachable endpoint."""

    status = 500
    error_type = "InternalServerErrorException"


class IntegrationTimeout(InvocationError):
    """The HTTP integration did not answer within API Gateway's 29 seconds."""

    status = 504
    error_type = "IntegrationTimeout"


class NoIntegrationResponse(InvocationError):
    """The integration answered, but no integration response maps its status
    and none is the default."""

    status = 500
    error_type = "InternalServerErrorException"


def error_response(error: InvocationError, request_id: str) -> Response:
    """The response API Gateway sends for `error`."""
    body = json.dumps({"message": error.message}).encode()
    headers = Headers(
        {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "x-amzn-ErrorType": error.error_type,
            "x-amzn-RequestId": request_id,
        }
    )
    return Response(error.status, headers, body)
