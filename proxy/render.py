"""AWS-shaped error responses: XML for query and REST-XML services, JSON for
JSON and REST-JSON ones. Plain functions; nothing here touches a socket.
"""

from __future__ import annotations

import json
import uuid
from xml.sax.saxutils import escape

from werkzeug.datastructures import Headers

from proxy.errors import ProxyError
from proxy.messages import Response
from proxy.services import JSON, QUERY, REST_JSON, REST_XML


def error_response(
    protocol: str, status: int, code: str, message: str, request_id: str = ""
) -> Response:
    """The error body and headers a client of `protocol` parses as AWS's own."""
    request_id = request_id or str(uuid.uuid4())
    headers = Headers({"x-amzn-RequestId": request_id})
    if protocol in (JSON, REST_JSON):
        document: dict[str, str] = {"__type": code, "message": message}
        if protocol == JSON:
            content_type = "application/x-amz-json-1.0"
        else:
            content_type = "application/json"
            del document["__type"]
            document["code"] = code
        headers["x-amzn-ErrorType"] = code
        body = json.dumps(document).encode()
    elif protocol == QUERY:
        content_type = "text/xml"
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            "<ErrorResponse><Error>"
            f"<Type>{'Sender' if status < 500 else 'Receiver'}</Type>"
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{escape(request_id)}</RequestId></ErrorResponse>"
        ).encode()
    else:
        content_type = "application/xml"
        headers["x-amz-request-id"] = request_id
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{escape(request_id)}</RequestId></Error>"
        ).encode()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    return Response(status, headers, body)


def render_error(error: ProxyError, protocol: str = REST_XML) -> Response:
    """The response for one of the proxy's own errors."""
    return error_response(protocol, error.status, error.code, error.message)
