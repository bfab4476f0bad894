"""S3 CORS from each bucket's configuration, through the proxy, both backends."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from proxy.listener import register
from proxy.listeners.cors import CorsListener
from proxy.listeners.s3_cors import (
    CorsRule,
    S3CorsListener,
    match_rule,
    parse_cors_configuration,
    wildcard_match,
)
from tests.proxy.proxy_support import ProxyFactory, RunningProxy, unique

APP = "http://app.example"
CORS_NAMES = ("access-control-", "vary")


@pytest.fixture
def cors_proxy(make_proxy: ProxyFactory) -> RunningProxy:
    return make_proxy(
        register("cors", CorsListener()),
        register("s3-cors", S3CorsListener()),
    )


def _buckets(proxy: RunningProxy) -> tuple[str, str]:
    s3 = proxy.client("s3")
    configured, plain = unique("cors"), unique("nocors")
    for bucket in (configured, plain):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    s3.put_bucket_cors(
        Bucket=configured,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [APP, "https://*.example.org"],
                    "AllowedMethods": ["GET", "PUT"],
                    "AllowedHeaders": ["content-type", "x-amz-*"],
                    "ExposeHeaders": ["ETag", "x-amz-request-id"],
                    "MaxAgeSeconds": 600,
                },
                {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
            ]
        },
    )
    return configured, plain


def _preflight(
    proxy: RunningProxy, bucket: str, origin: str, method: str, headers: str = ""
) -> requests.Response:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return requests.options(f"{proxy.url}/{bucket}/k", headers=sent, timeout=30)


def _cors_headers(response: requests.Response | dict[str, Any]) -> dict[str, str]:
    if isinstance(response, dict):
        headers = response["ResponseMetadata"]["HTTPHeaders"]
    else:
        headers = response.headers
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower().startswith(CORS_NAMES)
    }


def _browser_client(proxy: RunningProxy, origin: str) -> Any:
    """An S3 client whose requests carry `Origin`, as a browser's would."""
    s3 = proxy.client("s3")

    def add_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = origin

    s3.meta.events.register("before-sign.s3", add_origin)
    return s3


def test_a_preflight_that_a_rule_allows_gets_that_rules_headers(
    cors_proxy: RunningProxy,
) -> None:
    bucket, _ = _buckets(cors_proxy)

    answer = _preflight(cors_proxy, bucket, APP, "PUT", "Content-Type,X-Amz-Date")
    wildcard = _preflight(cors_proxy, bucket, "https://a.b.example.org", "GET")
    anyone = _preflight(cors_proxy, bucket, "http://elsewhere.test", "GET")

    assert answer.status_code == 200
    assert _cors_headers(answer) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "Content-Type,X-Amz-Date",
        "access-control-expose-headers": "ETag, x-amz-request-id",
        "access-control-max-age": "600",
        "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    assert wildcard.headers["Access-Control-Allow-Origin"] == "https://a.b.example.org"
    assert anyone.status_code == 200
    assert anyone.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in anyone.headers


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        (APP, "DELETE", ""),
        (APP, "PUT", "x-custom"),
        ("http://elsewhere.test", "PUT", ""),
    ],
    ids=["method", "header", "origin"],
)
def test_a_preflight_that_no_rule_allows_is_a_403(
    cors_proxy: RunningProxy, origin: str, method: str, headers: str
) -> None:
    bucket, _ = _buckets(cors_proxy)

    answer = _preflight(cors_proxy, bucket, origin, method, headers)

    assert answer.status_code == 403
    assert "<Code>AccessForbidden</Code>" in answer.text
    assert "CORS request is not allowed" in answer.text
    assert _cors_headers(answer) == {}


def test_responses_carry_the_matching_rules_headers(cors_proxy: RunningProxy) -> None:
    bucket, _ = _buckets(cors_proxy)

    got = _browser_client(cors_proxy, APP).get_object(Bucket=bucket, Key="k")
    other = _browser_client(cors_proxy, "http://elsewhere.test").put_object(
        Bucket=bucket, Key="k2", Body=b"x"
    )

    assert got["Body"].read() == b"data"
    assert _cors_headers(got) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-expose-headers": "ETag, x-amz-request-id",
        "access-control-max-age": "600",
        "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    assert _cors_headers(other) == {}


def test_no_configuration_no_cors_headers(cors_proxy: RunningProxy) -> None:
    _, bucket = _buckets(cors_proxy)

    preflight = _preflight(cors_proxy, bucket, APP, "GET")
    got = _browser_client(cors_proxy, APP).get_object(Bucket=bucket, Key="k")

    assert preflight.status_code == 403
    assert "CORS is not enabled for this bucket" in preflight.text
    assert got["Body"].read() == b"data"
    assert _cors_headers(got) == {}


def test_a_request_for_no_bucket_is_left_to_the_generic_listener(
    cors_proxy: RunningProxy,
) -> None:
    answer = _preflight(cors_proxy, unique("missing"), APP, "POST")

    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == APP


RULES = [
    CorsRule(("http://a.test",), ("GET",), ("x-amz-*",)),
    CorsRule(("*",), ("GET", "HEAD")),
]


@pytest.mark.parametrize(
    ("origin", "method", "headers", "expected"),
    [
        ("http://a.test", "GET", ["X-Amz-Date"], 0),
        ("http://a.test", "GET", ["authorization"], None),
        ("http://b.test", "HEAD", [], 1),
        ("http://b.test", "PUT", [], None),
    ],
    ids=["first-rule", "header-refused", "any-origin", "method-refused"],
)
def test_rule_matching(
    origin: str, method: str, headers: list[str], expected: int | None
) -> None:
    found = match_rule(RULES, origin, method, headers)

    assert (None if found is None else RULES.index(found[0])) == expected


def test_wildcards_and_parsing() -> None:
    document = (
        b'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
        b"<MaxAgeSeconds>5</MaxAgeSeconds></CORSRule></CORSConfiguration>"
    )

    assert parse_cors_configuration(document) == [CorsRule(("*",), ("GET",), (), (), 5)]
    assert wildcard_match("https://*.example.org", "https://x.example.org")
    assert not wildcard_match("https://*.example.org", "https://example.org")
    assert not wildcard_match("http://a.test", "http://A.test")
    assert wildcard_match("X-Amz-*", "x-amz-date", case_sensitive=False)
