"""Service detection, hop-by-hop filtering, error rendering and streamed
bodies: plain functions, tested without a socket."""

from __future__ import annotations

import io
import json

import pytest

from proxy.hop import end_to_end
from proxy.messages import StreamedBody
from proxy.render import error_response
from proxy.services import ServiceMatch, detect_service, s3_location

SCOPE = "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/{}/aws4_request, x"
KNOWN = frozenset({"s3", "sqs", "sns", "dynamodb", "iam", "sts", "awslambda"})


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "expected"),
    [
        (
            "POST",
            "/",
            {"X-Amz-Target": "DynamoDB_20120810.PutItem"},
            None,
            ("dynamodb", "json", "PutItem"),
        ),
        (
            "POST",
            "/",
            {"X-Amz-Target": "AmazonSQS.SendMessage", "Authorization": SCOPE},
            None,
            ("sqs", "json", "SendMessage"),
        ),
        (
            "POST",
            "/",
            {
                "Authorization": SCOPE.format("sns"),
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            },
            b"Action=Publish&Version=2010-03-31",
            ("sns", "query", "Publish"),
        ),
        (
            "GET",
            "/?Action=ListUsers&Version=2010-05-08",
            {"Authorization": SCOPE.format("iam")},
            None,
            ("iam", "query", "ListUsers"),
        ),
        (
            "POST",
            "/",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15",
            ("sts", "query", "AssumeRoleWithWebIdentity"),
        ),
        (
            "GET",
            "/2015-03-31/functions/",
            {"Authorization": SCOPE.format("lambda")},
            None,
            ("lambda", "rest-json", "GET /2015-03-31"),
        ),
        (
            "PUT",
            "/bucket/a/b.txt",
            {"Authorization": SCOPE.format("s3")},
            None,
            ("s3", "rest-xml", "PutObject"),
        ),
        (
            "GET",
            "/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
            "AKID%2F20250101%2Fus-east-1%2Fs3%2Faws4_request",
            {"Host": "bucket.s3.amazonaws.com"},
            None,
            ("s3", "rest-xml", "GetObject"),
        ),
        (
            "GET",
            "/k?AWSAccessKeyId=AKID&Signature=x&Expires=1",
            {"Host": "bucket.localhost:4566"},
            None,
            ("s3", "rest-xml", "GetObject"),
        ),
        (
            "GET",
            "/",
            {"Host": "127.0.0.1:4566"},
            None,
            ("s3", "rest-xml", "ListBuckets"),
        ),
        (
            "POST",
            "/bucket/key?uploads",
            {},
            None,
            ("s3", "rest-xml", "CreateMultipartUpload"),
        ),
        (
            "PUT",
            "/bucket/key?partNumber=1&uploadId=u",
            {},
            None,
            ("s3", "rest-xml", "UploadPart"),
        ),
        ("PUT", "/bucket?cors", {}, None, ("s3", "rest-xml", "PutBucketCors")),
        ("GET", "/bucket?list-type=2", {}, None, ("s3", "rest-xml", "ListObjectsV2")),
        ("POST", "/bucket?delete", {}, None, ("s3", "rest-xml", "DeleteObjects")),
        (
            "GET",
            "/restapis/a1b2/prod/_user_request_/pets?x=1",
            {"Authorization": SCOPE.format("execute-api")},
            None,
            ("execute-api", "rest-json", "GET /restapis/a1b2/prod/_user_request_/pets"),
        ),
        (
            "POST",
            "/pets",
            {"Host": "a1b2.execute-api.localhost:4566"},
            None,
            ("execute-api", "rest-json", "POST /pets"),
        ),
    ],
    ids=[
        "target-only",
        "target-and-scope",
        "form-body-action",
        "query-action",
        "unsigned-sts",
        "rest-json",
        "s3-path-style",
        "s3-presigned-v4-virtual-host",
        "s3-presigned-v2-localhost",
        "s3-list-buckets",
        "s3-multipart-create",
        "s3-upload-part",
        "s3-bucket-subresource",
        "s3-list-v2",
        "s3-delete-objects",
        "api-invocation-path",
        "api-invocation-host",
    ],
)
def test_detects_service_protocol_and_operation(
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    expected: tuple[str, str, str],
) -> None:
    headers = {k: v.format("sqs") for k, v in headers.items()}

    match = detect_service(method, path, headers, body, KNOWN)

    assert match == ServiceMatch(*expected)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": SCOPE.format("nosuchservice")},
        {"X-Amz-Target": "NoSuchService_20200101.Do"},
    ],
    ids=["scope", "target"],
)
def test_services_the_backend_lacks_are_not_detected(headers: dict[str, str]) -> None:
    assert detect_service("POST", "/", headers, None, KNOWN) is None


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("bucket.s3.amazonaws.com", "/a/b", ("bucket", "a/b")),
        ("my.bucket.s3.eu-west-1.amazonaws.com", "/k", ("my.bucket", "k")),
        ("bucket.localhost:4566", "/k%20x", ("bucket", "k x")),
        ("s3.amazonaws.com", "/bucket/k", ("bucket", "k")),
        ("127.0.0.1:4566", "/bucket/k", ("bucket", "k")),
        ("localhost:4566", "/bucket", ("bucket", "")),
    ],
)
def test_s3_location_in_both_styles(
    host: str, path: str, expected: tuple[str, str]
) -> None:
    assert s3_location(host, path) == expected


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = [
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Expect", "100-continue"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]

    assert end_to_end(headers) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_errors_render_in_the_protocol_of_the_service() -> None:
    as_json = error_response("json", 400, "Bad", "why <not>")
    as_rest_json = error_response("rest-json", 404, "NotFound", "gone")
    as_query = error_response("query", 502, "BadGateway", "down & out", "rid")
    as_xml = error_response("rest-xml", 400, "Bad", "no", "rid")

    assert json.loads(as_json.content) == {"__type": "Bad", "message": "why <not>"}
    assert as_json.headers["Content-Type"] == "application/x-amz-json-1.0"
    assert as_rest_json.headers["x-amzn-ErrorType"] == "NotFound"
    assert b"<Type>Receiver</Type><Code>BadGateway</Code>" in as_query.content
    assert b"<Message>down &amp; out</Message>" in as_query.content
    assert as_xml.content.endswith(
        b"<Error><Code>Bad</Code><Message>no</Message><RequestId>rid</RequestId></Error>"
    )
    assert as_xml.headers["Content-Length"] == str(len(as_xml.content))


def test_a_streamed_body_reads_its_prefix_then_exactly_its_length() -> None:
    rest = io.BytesIO(b"defghij-not-ours")
    body = StreamedBody(b"abc", rest, 10)

    assert len(body) == 10
    assert body.read(2) == b"ab"
    assert b"".join(body) == b"cdefghij"
    assert body.read() == b""
    assert rest.read() == b"-not-ours"


def test_a_chunked_streamed_body_reads_to_the_end() -> None:
    body = StreamedBody(b"ab", io.BytesIO(b"cd"), None)

    with pytest.raises(TypeError):
        len(body)
    assert body.read_all() == b"abcd"
