"""Cross-origin requests from browsers: answer preflights and let browsers read
responses.

A global listener. A service listener that applies its own CORS rules (S3
buckets' CORS configurations, for one) takes a lower `order`, answers the
preflight itself, and forwards the other requests it decides with their headers
wrapped in `CorsClaimed`: this listener then leaves them alone.
"""

from __future__ import annotations

from werkzeug.datastructures import Headers

from proxy.messages import Body, Response

ALLOWED_METHODS = "GET, HEAD, PUT, POST, DELETE, PATCH, OPTIONS"
EXPOSED_HEADERS = ", ".join(
    (
        "ETag",
        "x-amz-request-id",
        "x-amz-id-2",
        "x-amz-version-id",
        "x-amz-delete-marker",
        "x-amzn-RequestId",
        "x-amzn-ErrorType",
        "Content-Length",
        "Content-Type",
        "Last-Modified",
    )
)
MAX_AGE_SECONDS = "86400"


class CorsClaimed(Headers):
    """Request headers whose CORS answer another listener gives."""


class CorsListener:
    """Answers CORS preflights and adds `Access-Control-*` to responses."""

    service: str | None = None
    order = 100

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> bool | Response:
        origin = headers.get("Origin")
        wanted = headers.get("Access-Control-Request-Method")
        if method != "OPTIONS" or not origin or not wanted:
            return True
        answer = Headers(
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Max-Age": MAX_AGE_SECONDS,
                "Vary": "Origin",
                "Content-Length": "0",
            }
        )
        requested = headers.get("Access-Control-Request-Headers")
        if requested:
            answer["Access-Control-Allow-Headers"] = requested
        return Response(200, answer, b"")

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Response | None:
        origin = headers.get("Origin")
        if not origin or isinstance(headers, CorsClaimed):
            return None
        # moto answers `*`, which browsers refuse for credentialed requests.
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")
        return response
