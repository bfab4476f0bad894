"""Service detection: which AWS service a request is for, by which protocol it
speaks, and which operation it calls.

Plain functions on plain data, with no I/O, in the order AWS clients give the
signals: the `X-Amz-Target` prefix, the SigV4 credential scope (in
`Authorization` or in a presigned URL's `X-Amz-Credential`), an `Action=`
parameter, the S3 virtual-host name, and finally S3 path style, which is what an
unsigned request for an object looks like.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from werkzeug.datastructures import Headers

# The protocols decide the shape of an error body (see `proxy.render`).
JSON = "json"
REST_JSON = "rest-json"
QUERY = "query"
REST_XML = "rest-xml"

# X-Amz-Target prefixes of the JSON-protocol services, by signing name.
TARGET_PREFIXES: dict[str, str] = {
    "AmazonSQS": "sqs",
    "DynamoDB_20120810": "dynamodb",
    "DynamoDBStreams_20120810": "dynamodbstreams",
    "Kinesis_20131202": "kinesis",
    "Firehose_20150804": "firehose",
    "Logs_20140328": "logs",
    "AWSEvents": "events",
    "AmazonSSM": "ssm",
    "secretsmanager": "secretsmanager",
    "AWSStepFunctions": "states",
    "TrentService": "kms",
    "AWSCognitoIdentityProviderService": "cognito-idp",
    "AWSCognitoIdentityService": "cognito-identity",
    "CertificateManager": "acm",
    "AmazonEC2ContainerServiceV20141113": "ecs",
    "AmazonEC2ContainerRegistry_V20150921": "ecr",
    "GraniteServiceVersion20100801": "monitoring",
    "AWSOrganizationsV20161128": "organizations",
    "AWSGlue": "glue",
    "AmazonAthena": "athena",
}

# Services whose requests carry `Action=` and whose errors are XML.
QUERY_SERVICES = frozenset(
    {
        "sns",
        "sqs",
        "iam",
        "sts",
        "ec2",
        "monitoring",
        "email",
        "elasticloadbalancing",
        "autoscaling",
        "cloudformation",
        "rds",
        "redshift",
        "elasticache",
        "sdb",
    }
)
REST_XML_SERVICES = frozenset({"s3", "s3control", "route53", "cloudfront"})

# Signing names that moto knows by another module name.
ALIASES: dict[str, str] = {
    "lambda": "awslambda",
    "monitoring": "cloudwatch",
    "email": "ses",
    "states": "stepfunctions",
    "tagging": "resourcegroupstaggingapi",
    "execute-api": "apigateway",
    "elasticloadbalancing": "elbv2",
    "application-autoscaling": "applicationautoscaling",
    "iotdata": "iotdata",
    "data.iot": "iotdata",
}

# API Gateway's invocation endpoint: by path, or by the API's own host name.
INVOKE = "execute-api"
_INVOKE_PATH = re.compile(r"^/restapis/[^/]+/[^/]+/_user_request_(?:/|$)")
_INVOKE_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.")
_CREDENTIAL = re.compile(r"Credential=[^/,\s]*/[^/]*/[^/]*/([^/,\s]+)/")
_S3_HOST = re.compile(r"^(?P<bucket>.+?)\.s3[.-](?:[^.]+\.)*[^.:]+(?::\d+)?$")
_LOCAL_HOST = re.compile(r"^(?P<bucket>[^.:]+(?:\.[^.:]+)*)\.localhost(?::\d+)?$")


@dataclass(frozen=True)
class ServiceMatch:
    """What detection found: the signing name, protocol and operation."""

    service: str
    protocol: str
    operation: str


def detect_service(
    method: str,
    path: str,
    headers: Headers | Mapping[str, str],
    body: bytes | None = None,
    known: frozenset[str] | None = None,
) -> ServiceMatch | None:
    """Detect the service of one request.

    `path` is the raw request target with its query string, `body` the request
    body when it is a small form, and `known` the backend's service names (moto
    module names). Returns None when the request names a service outside
    `known`, or a target prefix nobody knows.
    """
    raw_path, _, query = path.partition("?")
    target = headers.get("X-Amz-Target")
    scope = credential_service(headers.get("Authorization"), query)

    # Invocations of deployed REST APIs, whatever signs them.
    if _INVOKE_PATH.match(raw_path) or _INVOKE_HOST.match(headers.get("Host", "")):
        return ServiceMatch(INVOKE, REST_JSON, f"{method} {raw_path}")

    # JSON protocol: the target says both service and operation.
    if target:
        prefix, _, operation = target.rpartition(".")
        service = TARGET_PREFIXES.get(prefix) or scope
        if service is None or not is_known(service, known):
            return None
        return ServiceMatch(service, JSON, operation or "-")

    action = form_action(query, headers, body)
    if scope is not None and scope != "s3":
        if not is_known(scope, known):
            return None
        if action is not None:
            return ServiceMatch(scope, QUERY, action)
        protocol = REST_XML if scope in REST_XML_SERVICES else REST_JSON
        if scope in QUERY_SERVICES:
            protocol = QUERY
        return ServiceMatch(scope, protocol, rest_operation(method, raw_path))

    # Unsigned query calls (sts:AssumeRoleWithWebIdentity, for one).
    if scope is None and action is not None:
        return ServiceMatch(action_service(query, body), QUERY, action)

    bucket, key = s3_location(headers.get("Host", ""), raw_path)
    return ServiceMatch("s3", REST_XML, s3_operation(method, bucket, key, query))


def credential_service(authorization: str | None, query: str) -> str | None:
    """The service in a SigV4 credential scope, or "s3" for SigV2, else None."""
    if authorization:
        if authorization.startswith("AWS "):
            return "s3"
        match = _CREDENTIAL.search(authorization)
        if match:
            return match.group(1)
    if "X-Amz-Credential=" in query:
        credential = parse_qs(query).get("X-Amz-Credential", [""])[0]
        parts = credential.split("/")
        if len(parts) == 5:
            return parts[3]
    if "AWSAccessKeyId=" in query:
        return "s3"
    return None


def is_known(service: str, known: frozenset[str] | None) -> bool:
    """Whether the backend serves `service` (any service when `known` is None)."""
    if known is None:
        return True
    name = ALIASES.get(service, service)
    return name in known or name.replace("-", "") in known


def form_action(
    query: str, headers: Headers | Mapping[str, str], body: bytes | None
) -> str | None:
    """The `Action=` of a query-protocol call, from the query or a form body."""
    if "Action=" in query:
        return parse_qs(query).get("Action", [None])[0]
    content_type = headers.get("Content-Type", "")
    if body and content_type.startswith("application/x-www-form-urlencoded"):
        text = body.decode("utf-8", "replace")
        if "Action=" in text:
            return parse_qs(text).get("Action", [None])[0]
    return None


# Unsigned query calls come from a few services only; the version tells them
# apart.
_VERSIONS = {"2011-06-15": "sts", "2010-05-08": "iam", "2010-03-31": "sns"}


def action_service(query: str, body: bytes | None) -> str:
    """The service of an unsigned `Action=` call, by its API version."""
    text = query + "&" + (body or b"").decode("utf-8", "replace")
    version = parse_qs(text).get("Version", [""])[0]
    return _VERSIONS.get(version, "sqs" if "QueueUrl=" in text else "sts")


def s3_location(host: str, raw_path: str) -> tuple[str, str]:
    """Bucket and key of an S3 request, virtual-host or path style."""
    path = unquote(raw_path)
    match = _S3_HOST.match(host) or _LOCAL_HOST.match(host)
    if match and not host.startswith("s3."):
        return match.group("bucket"), path.lstrip("/")
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


_BUCKET_SUBRESOURCES = {
    "acl": "BucketAcl",
    "cors": "BucketCors",
    "policy": "BucketPolicy",
    "tagging": "BucketTagging",
    "versioning": "BucketVersioning",
    "lifecycle": "BucketLifecycleConfiguration",
    "notification": "BucketNotificationConfiguration",
    "website": "BucketWebsite",
    "encryption": "BucketEncryption",
    "location": "BucketLocation",
    "uploads": "MultipartUploads",
    "versions": "ObjectVersions",
}
_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}


def s3_operation(method: str, bucket: str, key: str, query: str) -> str:
    """The S3 operation name of a request, as close as the URL tells it."""
    params = {part.partition("=")[0] for part in query.split("&") if part}
    if not bucket:
        return "ListBuckets" if method == "GET" else "-"
    if not key:
        return _bucket_operation(method, params)
    if "uploadId" in params:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "GET": "ListParts",
            "DELETE": "AbortMultipartUpload",
        }.get(method, "-")
    if method == "POST" and "uploads" in params:
        return "CreateMultipartUpload"
    if "tagging" in params:
        return _VERBS.get(method, "-") + "ObjectTagging"
    return {
        "PUT": "PutObject",
        "GET": "GetObject",
        "HEAD": "HeadObject",
        "DELETE": "DeleteObject",
        "POST": "PostObject",
    }.get(method, "-")


def _bucket_operation(method: str, params: set[str]) -> str:
    if method == "POST" and "delete" in params:
        return "DeleteObjects"
    for name, noun in _BUCKET_SUBRESOURCES.items():
        if name in params and method in _VERBS:
            listing = name in ("uploads", "versions")
            return ("List" if listing else _VERBS[method]) + noun
    return {
        "PUT": "CreateBucket",
        "HEAD": "HeadBucket",
        "DELETE": "DeleteBucket",
        "GET": "ListObjectsV2" if "list-type" in params else "ListObjects",
        "POST": "PostObject",
    }.get(method, "-")


def rest_operation(method: str, raw_path: str) -> str:
    """A readable name for a REST call whose operation the URL only implies."""
    segments = [s for s in raw_path.split("/") if s]
    return f"{method} /{segments[0]}" if segments else method
