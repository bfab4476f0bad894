"""Helpers the service listeners share: who signed a request, and requests that a
listener sends to the backend on its own.

moto does not verify signatures; it reads the account from the access key and
the region from the credential scope. A listener's own request therefore
carries a SigV4-shaped `Authorization` with the caller's access key and region.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from werkzeug.datastructures import Headers

from proxy.messages import Request

DEFAULT_ACCESS_KEY = "testing"
DEFAULT_REGION = "us-east-1"

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/,\s]+)/")


@dataclass(frozen=True)
class Caller:
    """The access key and region a request was signed with."""

    access_key: str = DEFAULT_ACCESS_KEY
    region: str = DEFAULT_REGION


def caller(headers: Headers, query: str = "") -> Caller:
    """The caller of a request, from its `Authorization` or presigned query;
    the defaults for an unsigned request (moto's default account)."""
    match = _CREDENTIAL.search(headers.get("Authorization", ""))
    if match:
        return Caller(match.group(1), match.group(2))
    credential = parse_qs(query).get("X-Amz-Credential", [""])[0].split("/")
    if len(credential) == 5:
        return Caller(credential[0], credential[2])
    return Caller()


def backend_request(
    who: Caller,
    service: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Request:
    """A request as `who` would send it to `service`, for `Backend.send`."""
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope = f"{who.access_key}/{date[:8]}/{who.region}/{service}/aws4_request"
    all_headers = Headers(
        {
            "Host": f"{service}.{who.region}.amazonaws.com",
            "X-Amz-Date": date,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={scope}, "
                "SignedHeaders=host;x-amz-date, Signature=proxy-listener"
            ),
            "Content-Length": str(len(body)),
        }
    )
    for name, value in (headers or {}).items():
        all_headers[name] = value
    return Request(method, path, body, all_headers)
