"""Routing, parameter mapping, response selection and AWS integration URIs of
the API Gateway listener: plain functions, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.listeners.apigateway.errors import IntegrationFailed
from proxy.listeners.apigateway.integrations import aws_service_request
from proxy.listeners.apigateway.mapping import (
    UnsupportedMediaType,
    choose_template,
    expand_uri,
    map_request_parameters,
    map_response_headers,
    select_integration_response,
)
from proxy.listeners.apigateway.routing import (
    Invocation,
    match_resource,
    parse_invocation,
    pick_method,
)
from proxy.listeners.apigateway.templates import MethodRequest


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        (
            "/restapis/abc123/dev/_user_request_/pets/7?x=1&y=",
            "localhost:4566",
            Invocation("abc123", "dev", "/pets/7", (("x", "1"), ("y", ""))),
        ),
        (
            "/restapis/abc123/dev/_user_request_",
            "localhost:4566",
            Invocation("abc123", "dev", "/"),
        ),
        (
            "/prod/pets",
            "abc123.execute-api.localhost:4566",
            Invocation("abc123", "prod", "/pets"),
        ),
        (
            "/prod",
            "abc123.execute-api.us-east-1.amazonaws.com",
            Invocation("abc123", "prod", "/"),
        ),
    ],
    ids=["path-style", "path-style-root", "host-style", "host-style-root"],
)
def test_parse_invocation(target: str, host: str, expected: Invocation) -> None:
    assert parse_invocation(target, host) == expected


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("/restapis/abc123/resources", "localhost:4566"),
        ("/bucket/_user_request_/key", "localhost:4566"),
        ("/my-bucket/key", "my-bucket.s3.localhost:4566"),
    ],
    ids=["control-plane", "s3-key-with-the-marker", "s3-virtual-host"],
)
def test_other_requests_are_not_invocations(target: str, host: str) -> None:
    assert parse_invocation(target, host) is None


RESOURCES: list[dict[str, Any]] = [
    {"id": "root", "path": "/"},
    {"id": "pets", "path": "/pets"},
    {"id": "pet", "path": "/pets/{petId}"},
    {"id": "mine", "path": "/pets/mine"},
    {"id": "toys", "path": "/pets/{petId}/toys"},
    {"id": "greedy", "path": "/{proxy+}"},
    {"id": "files", "path": "/files/{path+}"},
]


@pytest.mark.parametrize(
    ("path", "resource", "parameters"),
    [
        ("/", "root", {}),
        ("/pets", "pets", {}),
        ("/pets/", "pets", {}),
        ("/pets/mine", "mine", {}),
        ("/pets/42", "pet", {"petId": "42"}),
        ("/pets/a%20b", "pet", {"petId": "a b"}),
        ("/pets/42/toys", "toys", {"petId": "42"}),
        ("/pets/42/toys/9", "greedy", {"proxy": "pets/42/toys/9"}),
        ("/files/a/b.txt", "files", {"path": "a/b.txt"}),
        ("/other", "greedy", {"proxy": "other"}),
    ],
)
def test_match_resource_prefers_literal_then_parameter_then_greedy(
    path: str, resource: str, parameters: dict[str, str]
) -> None:
    match = match_resource(RESOURCES, path)

    assert match is not None
    assert (match.resource["id"], match.path_parameters) == (resource, parameters)


def test_no_resource_matches() -> None:
    assert match_resource(RESOURCES[:3], "/pets/1/2") is None
    assert match_resource([{"path": "/files/{path+}"}], "/files") is None


def test_pick_method_falls_back_to_any() -> None:
    resource = {"resourceMethods": {"GET": {"m": "get"}, "ANY": {"m": "any"}}}

    assert pick_method(resource, "get") == {"m": "get"}
    assert pick_method(resource, "PATCH") == {"m": "any"}
    assert pick_method({"resourceMethods": {"GET": {}}}, "POST") is None


def test_map_request_parameters() -> None:
    request = MethodRequest(
        path={"id": "7"}, querystring={"q": "s"}, header={"X-Trace": "t"}
    )
    mapping = {
        "integration.request.path.id": "method.request.path.id",
        "integration.request.querystring.search": "method.request.querystring.q",
        "integration.request.header.X-T": "method.request.header.x-trace",
        "integration.request.header.X-Fixed": "'literal'",
        "integration.request.header.X-Stage": "stageVariables.color",
        "integration.request.header.X-Ctx": "context.requestId",
        "integration.request.header.X-None": "method.request.querystring.none",
        "method.response.header.Ignored": "'x'",
    }

    mapped = map_request_parameters(
        mapping, request, {"color": "blue"}, {"requestId": "r"}
    )

    assert mapped.path == {"id": "7"}
    assert mapped.querystring == {"search": "s"}
    assert mapped.header == {
        "X-T": "t",
        "X-Fixed": "literal",
        "X-Stage": "blue",
        "X-Ctx": "r",
    }


def test_expand_uri() -> None:
    uri = "http://${stageVariables.host}/items/{id}/{proxy}"

    assert expand_uri(uri, {"host": "h:1"}, {"id": "7", "proxy": "a/b"}) == (
        "http://h:1/items/7/a/b"
    )


@pytest.mark.parametrize(
    ("content_type", "passthrough", "expected"),
    [
        ("application/json; charset=utf-8", "WHEN_NO_MATCH", "json"),
        ("TEXT/PLAIN", "WHEN_NO_MATCH", "text"),
        ("application/xml", "WHEN_NO_MATCH", None),
        (None, "WHEN_NO_MATCH", "json"),
    ],
)
def test_choose_template(
    content_type: str | None, passthrough: str, expected: str | None
) -> None:
    templates = {"application/json": "json", "text/plain": "text"}

    assert choose_template(templates, content_type, passthrough) == expected


def test_choose_template_refuses_unmapped_types_when_told_to() -> None:
    with pytest.raises(UnsupportedMediaType):
        choose_template({"application/json": "j"}, "text/csv", "NEVER")
    with pytest.raises(UnsupportedMediaType):
        choose_template({"application/json": "j"}, "text/csv", "WHEN_NO_TEMPLATES")
    assert choose_template({}, "text/csv", "WHEN_NO_TEMPLATES") is None


RESPONSES = {
    "200": {"statusCode": "200"},
    "400": {"statusCode": "400", "selectionPattern": "4\\d{2}"},
    "502": {"statusCode": "502", "selectionPattern": "5\\d{2}"},
}


@pytest.mark.parametrize(
    ("status", "selected"), [(200, "200"), (201, "200"), (404, "400"), (503, "502")]
)
def test_select_integration_response(status: int, selected: str) -> None:
    response = select_integration_response(RESPONSES, status)

    assert response is not None
    assert response["statusCode"] == selected


def test_no_default_integration_response() -> None:
    assert select_integration_response({"4": RESPONSES["400"]}, 200) is None


def test_map_response_headers() -> None:
    mapping = {
        "method.response.header.X-Literal": "'v'",
        "method.response.header.X-From": "integration.response.header.x-up",
        "method.response.header.X-Body": "integration.response.body.id",
        "method.response.header.X-Missing": "integration.response.header.none",
    }

    headers = map_response_headers(mapping, {"X-Up": "u"}, {"id": 5})

    assert headers == {"X-Literal": "v", "X-From": "u", "X-Body": "5"}


@pytest.mark.parametrize(
    ("uri", "method", "query", "expected"),
    [
        (
            "arn:aws:apigateway:eu-west-1:dynamodb:action/PutItem",
            "POST",
            {},
            (
                "dynamodb",
                "eu-west-1",
                "POST",
                "/",
                {
                    "Content-Type": "application/x-amz-json-1.0",
                    "X-Amz-Target": "DynamoDB_20120810.PutItem",
                },
            ),
        ),
        (
            "arn:aws:apigateway:us-east-1:kinesis:action/PutRecord",
            "POST",
            {},
            (
                "kinesis",
                "us-east-1",
                "POST",
                "/",
                {
                    "Content-Type": "application/x-amz-json-1.1",
                    "X-Amz-Target": "Kinesis_20131202.PutRecord",
                },
            ),
        ),
        (
            "arn:aws:apigateway:us-east-1:sqs:action/SendMessage",
            "POST",
            {"QueueUrl": "http://q/1/a b"},
            (
                "sqs",
                "us-east-1",
                "POST",
                "/?Action=SendMessage&QueueUrl=http%3A%2F%2Fq%2F1%2Fa+b",
                {"Content-Type": "application/x-www-form-urlencoded"},
            ),
        ),
        (
            "arn:aws:apigateway:us-east-1:s3:path/bucket/key.txt",
            "GET",
            {"versionId": "3"},
            ("s3", "us-east-1", "GET", "/bucket/key.txt?versionId=3", {}),
        ),
    ],
    ids=["dynamodb-action", "kinesis-action", "sqs-action", "s3-path"],
)
def test_aws_service_request(
    uri: str, method: str, query: dict[str, str], expected: tuple[Any, ...]
) -> None:
    request = aws_service_request(uri, method, query, {})

    assert (
        request.service,
        request.region,
        request.method,
        request.target,
        request.headers,
    ) == expected


def test_aws_service_request_names_a_bad_uri() -> None:
    with pytest.raises(IntegrationFailed, match="'arn:aws:lambda:x' is not"):
        aws_service_request("arn:aws:lambda:x", "POST", {}, {})
