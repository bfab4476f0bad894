"""Deployed REST APIs invoked through the proxy, once per backend: boto3 builds
each API through the proxy, `requests` calls it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from proxy.backend import RemoteBackend
from proxy.cli import Settings, build_gateway
from proxy.gateway import Gateway
from proxy.listener import ListenerChain, register
from proxy.listeners.apigateway import ApiGatewayListener
from proxy.server import ProxyServer
from tests.proxy.proxy_support import ProxyFactory, RunningProxy, free_port, unique

# A MOCK integration that answers 200.
MOCK_200 = {
    "type": "MOCK",
    "requestTemplates": {"application/json": '{"statusCode": 200}'},
}


@pytest.fixture
def apigw(make_proxy: ProxyFactory) -> RunningProxy:
    """The proxy with the API Gateway listener, which takes the backend from the
    server's start, as it does when loaded from its entry point."""
    return make_proxy(register("apigateway", ApiGatewayListener()))


class _Echo(BaseHTTPRequestHandler):
    """Answers with what it received; `?status=N` picks the status."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        query = parse_qs(urlsplit(self.path).query)
        document = {
            "method": self.command,
            "path": urlsplit(self.path).path,
            "query": {k: v[0] for k, v in query.items()},
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        data = json.dumps(document).encode()
        self.send_response(int(query.get("status", ["200"])[0]))
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on what the server received."""


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Api:
    """A REST API built through the proxy with boto3, one route at a time."""

    def __init__(self, proxy: RunningProxy) -> None:
        self.proxy = proxy
        self.client = proxy.client("apigateway")
        self.id = self.client.create_rest_api(name=unique("api"))["id"]
        root = self.client.get_resources(restApiId=self.id)["items"][0]
        self._ids: dict[str, str] = {"/": root["id"]}

    def resource(self, path: str) -> str:
        """The id of the resource at `path`, creating the missing parents."""
        if path in self._ids:
            return self._ids[path]
        parent, _, part = path.rstrip("/").rpartition("/")
        parent_id = self.resource(parent or "/")
        created = self.client.create_resource(
            restApiId=self.id, parentId=parent_id, pathPart=part
        )
        self._ids[path] = created["id"]
        return str(created["id"])

    def route(
        self,
        method: str,
        path: str,
        integration: dict[str, Any],
        responses: list[dict[str, Any]] | None = None,
        api_key: bool = False,
    ) -> None:
        """A method on `path` with its integration and integration responses."""
        resource = self.resource(path)
        common = {"restApiId": self.id, "resourceId": resource, "httpMethod": method}
        self.client.put_method(
            **common, authorizationType="NONE", apiKeyRequired=api_key
        )
        self.client.put_integration(**common, **integration)
        for response in responses or []:
            status = response["statusCode"]
            self.client.put_method_response(**common, statusCode=status)
            self.client.put_integration_response(**common, **response)

    def deploy(self, stage: str = "dev", **variables: str) -> None:
        self.client.create_deployment(
            restApiId=self.id, stageName=stage, variables=variables
        )

    def url(self, path: str, stage: str = "dev") -> str:
        return f"{self.proxy.url}/restapis/{self.id}/{stage}/_user_request_{path}"


def test_mock_maps_request_and_response_through_templates(
    apigw: RunningProxy,
) -> None:
    api = Api(apigw)
    response_template = (
        '#set($name = $input.params("name"))'
        '{"hello": "$name", "stage": "$context.stage", '
        '"resource": "$context.resourcePath", "method": "$context.httpMethod", '
        '"color": "$stageVariables.color", "id": "$context.requestId", '
        '"ip": "$context.identity.sourceIp"}'
    )
    api.route(
        "GET",
        "/greet/{name}",
        {
            "type": "MOCK",
            "requestTemplates": {"application/json": '{"statusCode": 200}'},
        },
        [
            {
                "statusCode": "200",
                "responseTemplates": {"application/json": response_template},
                "responseParameters": {"method.response.header.X-Mocked": "'yes'"},
            }
        ],
    )
    api.deploy(color="blue")

    answer = requests.get(
        api.url("/greet/ada"), headers={"X-Forwarded-For": "10.1.2.3"}, timeout=30
    )

    assert answer.status_code == 200
    document = answer.json()
    assert document == {
        "hello": "ada",
        "stage": "dev",
        "resource": "/greet/{name}",
        "method": "GET",
        "color": "blue",
        "id": answer.headers["x-amzn-RequestId"],
        "ip": "10.1.2.3",
    }
    assert answer.headers["X-Mocked"] == "yes"


def test_mock_status_selects_the_integration_response(apigw: RunningProxy) -> None:
    api = Api(apigw)
    request_template = (
        "#if($input.params('fail') == 'yes')"
        '{"statusCode": 500}#else{"statusCode": 200}#end'
    )
    api.route(
        "POST",
        "/maybe",
        {"type": "MOCK", "requestTemplates": {"application/json": request_template}},
        [
            {
                "statusCode": "200",
                "responseTemplates": {"application/json": '{"ok": true}'},
            },
            {
                "statusCode": "503",
                "selectionPattern": "5\\d{2}",
                "responseTemplates": {"application/json": '{"ok": false}'},
            },
        ],
    )
    api.deploy()

    good = requests.post(api.url("/maybe"), json={}, timeout=30)
    bad = requests.post(api.url("/maybe?fail=yes"), json={}, timeout=30)

    assert (good.status_code, good.json()) == (200, {"ok": True})
    assert (bad.status_code, bad.json()) == (503, {"ok": False})


def test_http_integration_with_templates_and_stage_variables(
    apigw: RunningProxy, echo_url: str
) -> None:
    api = Api(apigw)
    request_template = (
        "{\"user\": $input.json('$.user'), \"count\": $input.path('$.items').size(),"
        ' "escaped": "$util.escapeJavaScript($input.path(\'$.user.name\'))",'
        ' "id": "$input.params(\'id\')"}'
    )
    response_template = (
        "#set($echo = $util.parseJson($input.body))"
        '{"upstreamPath": "$echo.path", "method": "$echo.method", "sent": $echo.body}'
    )
    api.route(
        "POST",
        "/orders/{id}",
        {
            "type": "HTTP",
            "integrationHttpMethod": "PUT",
            "uri": "http://127.0.0.1:${stageVariables.port}/store/{id}",
            "requestParameters": {
                "integration.request.path.id": "method.request.path.id",
                "integration.request.header.X-Source": "'gateway'",
                "integration.request.querystring.trace": "method.request.header.X-T",
            },
            "requestTemplates": {"application/json": request_template},
        },
        [
            {
                "statusCode": "200",
                "responseTemplates": {"application/json": response_template},
                "responseParameters": {
                    "method.response.header.X-Upstream": (
                        "integration.response.header.X-Echo"
                    )
                },
            }
        ],
    )
    api.deploy(port=echo_url.rpartition(":")[2])

    answer = requests.post(
        api.url("/orders/42"),
        json={"user": {"name": 'Ann "A"'}, "items": [1, 2, 3]},
        headers={"X-T": "t-1"},
        timeout=30,
    )

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "upstreamPath": "/store/42",
        "method": "PUT",
        "sent": {
            "user": {"name": 'Ann "A"'},
            "count": 3,
            "escaped": 'Ann "A"',
            "id": "42",
        },
    }
    assert answer.headers["X-Upstream"] == "yes"


def test_http_integration_status_pattern_picks_the_response(
    apigw: RunningProxy, echo_url: str
) -> None:
    api = Api(apigw)
    api.route(
        "GET",
        "/thing",
        {
            "type": "HTTP",
            "integrationHttpMethod": "GET",
            "uri": f"{echo_url}/thing",
            "requestParameters": {
                "integration.request.querystring.status": "method.request.querystring.s"
            },
        },
        [
            {"statusCode": "200"},
            {
                "statusCode": "404",
                "selectionPattern": "4\\d{2}",
                "responseTemplates": {"application/json": '{"missing": true}'},
            },
        ],
    )
    api.deploy()

    found = requests.get(api.url("/thing"), timeout=30)
    missing = requests.get(api.url("/thing?s=410"), timeout=30)

    assert found.status_code == 200
    assert found.json()["path"] == "/thing"
    assert (missing.status_code, missing.json()) == (404, {"missing": True})


def test_http_proxy_passes_everything_through_a_greedy_path(
    apigw: RunningProxy, echo_url: str
) -> None:
    api = Api(apigw)
    api.route(
        "ANY",
        "/files/{proxy+}",
        {
            "type": "HTTP_PROXY",
            "integrationHttpMethod": "ANY",
            "uri": f"{echo_url}/backend/{{proxy}}",
            "requestParameters": {
                "integration.request.path.proxy": "method.request.path.proxy"
            },
        },
    )
    api.deploy()

    answer = requests.delete(
        api.url("/files/a/b/c.txt?x=1&status=202"),
        headers={"X-Custom": "kept"},
        data=b"raw bytes",
        timeout=30,
    )

    assert answer.status_code == 202
    echoed = answer.json()
    assert echoed["method"] == "DELETE"
    assert echoed["path"] == "/backend/a/b/c.txt"
    assert echoed["query"] == {"x": "1", "status": "202"}
    assert echoed["headers"]["x-custom"] == "kept"
    assert echoed["body"] == "raw bytes"
    assert answer.headers["X-Echo"] == "yes"


def test_execute_api_host_style(apigw: RunningProxy) -> None:
    api = Api(apigw)
    api.route(
        "GET",
        "/",
        MOCK_200,
        [
            {
                "statusCode": "200",
                "responseTemplates": {"application/json": '{"path": "$context.path"}'},
            }
        ],
    )
    api.deploy("prod")

    answer = requests.get(
        f"http://127.0.0.1:{apigw.port}/prod/",
        headers={"Host": f"{api.id}.execute-api.localhost:{apigw.port}"},
        timeout=30,
    )

    assert answer.status_code == 200
    assert answer.json() == {"path": "/prod/"}


def test_api_key_is_required_where_the_method_says(apigw: RunningProxy) -> None:
    api = Api(apigw)
    api.route("GET", "/secret", MOCK_200, [{"statusCode": "200"}], api_key=True)
    api.deploy()
    key_value = unique("key-value-that-is-long-enough")
    key = api.client.create_api_key(name=unique("key"), enabled=True, value=key_value)
    stray_value = unique("stray-value-that-is-long-enough")
    api.client.create_api_key(name=unique("stray"), enabled=True, value=stray_value)
    plan = api.client.create_usage_plan(
        name=unique("plan"), apiStages=[{"apiId": api.id, "stage": "dev"}]
    )
    api.client.create_usage_plan_key(
        usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY"
    )

    without = requests.get(api.url("/secret"), timeout=30)
    outside_plan = requests.get(
        api.url("/secret"), headers={"x-api-key": stray_value}, timeout=30
    )
    allowed = requests.get(
        api.url("/secret"), headers={"x-api-key": key_value}, timeout=30
    )

    assert (without.status_code, without.json()) == (403, {"message": "Forbidden"})
    assert without.headers["x-amzn-ErrorType"] == "ForbiddenException"
    assert outside_plan.status_code == 403
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("target", "status", "error_type", "message"),
    [
        ("api", 404, "NotFoundException", "no REST API has the id 'nosuchapi'"),
        ("stage", 404, "NotFoundException", "has no stage 'nope'"),
        ("resource", 403, "MissingAuthenticationTokenException", "GET /nowhere"),
        ("method", 403, "MissingAuthenticationTokenException", "DELETE /here"),
    ],
    ids=["missing-api", "missing-stage", "missing-resource", "missing-method"],
)
def test_missing_parts_answer_as_api_gateway(
    apigw: RunningProxy, target: str, status: int, error_type: str, message: str
) -> None:
    api = Api(apigw)
    api.route("GET", "/here", MOCK_200, [{"statusCode": "200"}])
    api.deploy()
    urls = {
        "api": f"{apigw.url}/restapis/nosuchapi/dev/_user_request_/here",
        "stage": api.url("/here", stage="nope"),
        "resource": api.url("/nowhere"),
        "method": api.url("/here"),
    }

    answer = requests.request(
        "DELETE" if target == "method" else "GET", urls[target], timeout=30
    )

    assert answer.status_code == status
    assert answer.headers["x-amzn-ErrorType"] == error_type
    assert answer.headers["Content-Type"] == "application/json"
    assert message in answer.json()["message"]


def test_other_requests_pass_through_untouched(apigw: RunningProxy) -> None:
    apigateway = apigw.client("apigateway")
    api_id = apigateway.create_rest_api(name=unique("plain"))["id"]

    resources = apigateway.get_resources(restApiId=api_id)["items"]

    assert [r["path"] for r in resources] == ["/"]


ROLE = "arn:aws:iam::123456789012:role/apigateway-integrations"
FORM = {
    "integration.request.header.Content-Type": "'application/x-www-form-urlencoded'"
}


def aws(uri: str, template: str, **extra: Any) -> dict[str, Any]:
    """An AWS service integration with one JSON request template."""
    return {
        "type": "AWS",
        "integrationHttpMethod": "POST",
        "uri": f"arn:aws:apigateway:us-east-1:{uri}",
        "credentials": ROLE,
        "requestTemplates": {"application/json": template},
        **extra,
    }


def test_sqs_send_message_through_a_queue_path(apigw: RunningProxy) -> None:
    sqs = apigw.client("sqs")
    queue = unique("apigw-queue")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    api = Api(apigw)
    template = "Action=SendMessage&MessageBody=$util.urlEncode($input.body)"
    api.route(
        "POST",
        "/enqueue",
        aws(f"sqs:path/123456789012/{queue}", template, requestParameters=FORM),
        [{"statusCode": "200"}],
    )
    api.deploy()

    answer = requests.post(api.url("/enqueue"), json={"order": 7}, timeout=30)

    assert answer.status_code == 200, answer.text
    assert b"<MessageId>" in answer.content
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)
    assert [json.loads(m["Body"]) for m in messages["Messages"]] == [{"order": 7}]


def test_sns_publish_action_reaches_a_subscribed_queue(apigw: RunningProxy) -> None:
    sns, sqs = apigw.client("sns"), apigw.client("sqs")
    topic = sns.create_topic(Name=unique("apigw-topic"))["TopicArn"]
    queue_url = sqs.create_queue(QueueName=unique("apigw-sub"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    api = Api(apigw)
    template = (
        "TopicArn=$util.urlEncode($stageVariables.topic)"
        "&Message=$util.urlEncode($input.path('$.text'))"
    )
    api.route(
        "POST",
        "/publish",
        aws("sns:action/Publish", template, requestParameters=FORM),
        [{"statusCode": "200"}],
    )
    api.deploy(topic=topic)

    answer = requests.post(api.url("/publish"), json={"text": "hi & bye"}, timeout=30)

    assert answer.status_code == 200, answer.text
    assert b"<MessageId>" in answer.content
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)
    assert [m["Body"] for m in messages["Messages"]] == ["hi & bye"]


def test_dynamodb_put_and_get_item_actions(apigw: RunningProxy) -> None:
    dynamodb = apigw.client("dynamodb")
    table = unique("apigw-table")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    api = Api(apigw)
    put = (
        '{"TableName": "$stageVariables.table", "Item": {'
        '"id": {"S": "$input.params(\'id\')"}, '
        '"name": {"S": "$util.escapeJavaScript($input.path(\'$.name\'))"}}}'
    )
    get = (
        '{"TableName": "$stageVariables.table", '
        '"Key": {"id": {"S": "$input.params(\'id\')"}}}'
    )
    shown = (
        "#set($item = $input.path('$.Item'))"
        '{"id": "$item.id.S", "name": "$util.escapeJavaScript($item.name.S)"}'
    )
    api.route(
        "PUT",
        "/items/{id}",
        aws("dynamodb:action/PutItem", put),
        [{"statusCode": "200"}],
    )
    api.route(
        "GET",
        "/items/{id}",
        aws("dynamodb:action/GetItem", get),
        [{"statusCode": "200", "responseTemplates": {"application/json": shown}}],
    )
    api.deploy(table=table)

    stored = requests.put(api.url("/items/a1"), json={"name": 'Ann "A"'}, timeout=30)
    fetched = requests.get(api.url("/items/a1"), timeout=30)

    assert stored.status_code == 200, stored.text
    item = dynamodb.get_item(TableName=table, Key={"id": {"S": "a1"}})["Item"]
    assert item == {"id": {"S": "a1"}, "name": {"S": 'Ann "A"'}}
    assert (fetched.status_code, fetched.json()) == (
        200,
        {"id": "a1", "name": 'Ann "A"'},
    )


def test_kinesis_put_record_action(apigw: RunningProxy) -> None:
    kinesis = apigw.client("kinesis")
    stream = unique("apigw-stream")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    api = Api(apigw)
    template = (
        '{"StreamName": "$stageVariables.stream", '
        '"Data": "$util.base64Encode($input.body)", '
        '"PartitionKey": "$context.requestId"}'
    )
    api.route(
        "POST",
        "/records",
        aws("kinesis:action/PutRecord", template),
        [{"statusCode": "200"}],
    )
    api.deploy(stream=stream)

    answer = requests.post(api.url("/records"), json={"n": 1}, timeout=30)

    assert answer.status_code == 200, answer.text
    shard = answer.json()["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [json.loads(r["Data"]) for r in records] == [{"n": 1}]


def test_s3_objects_through_path_integrations(apigw: RunningProxy) -> None:
    s3 = apigw.client("s3")
    bucket = unique("apigw-bucket")
    s3.create_bucket(Bucket=bucket)
    api = Api(apigw)
    parameters = {
        "integration.request.path.bucket": "method.request.path.bucket",
        "integration.request.path.key": "method.request.path.key",
    }
    for method in ("PUT", "GET"):
        api.route(
            method,
            "/{bucket}/{key}",
            {
                "type": "AWS",
                "integrationHttpMethod": method,
                "uri": "arn:aws:apigateway:us-east-1:s3:path/{bucket}/{key}",
                "credentials": ROLE,
                "requestParameters": parameters,
            },
            [{"statusCode": "200"}],
        )
    api.deploy()

    stored = requests.put(
        api.url(f"/{bucket}/note.txt"),
        data=b"plain words",
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    fetched = requests.get(api.url(f"/{bucket}/note.txt"), timeout=30)

    assert stored.status_code == 200, stored.text
    assert s3.get_object(Bucket=bucket, Key="note.txt")["Body"].read() == b"plain words"
    assert (fetched.status_code, fetched.content) == (200, b"plain words")


def test_integration_failures_answer_as_api_gateway(apigw: RunningProxy) -> None:
    api = Api(apigw)
    closed_port = free_port()  # bound, then closed again: nothing listens
    api.route(
        "GET",
        "/unreachable",
        {
            "type": "HTTP",
            "integrationHttpMethod": "GET",
            "uri": f"http://127.0.0.1:{closed_port}/",
        },
        [{"statusCode": "200"}],
    )
    api.route(
        "GET",
        "/broken-template",
        {"type": "MOCK", "requestTemplates": {"application/json": "#if($x)"}},
        [{"statusCode": "200"}],
    )
    api.route("GET", "/no-response", MOCK_200)
    api.route(
        "GET",
        "/lambda",
        {
            "type": "AWS_PROXY",
            "integrationHttpMethod": "POST",
            "uri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
            "arn:aws:lambda:us-east-1:123456789012:function:f/invocations",
        },
    )
    api.deploy()

    answers = {
        name: requests.get(api.url(f"/{name}"), timeout=30)
        for name in ("unreachable", "broken-template", "no-response", "lambda")
    }

    messages = {name: answer.json()["message"] for name, answer in answers.items()}
    assert {a.status_code for a in answers.values()} == {500}
    assert messages["unreachable"].startswith("the HTTP integration at http://")
    assert messages["broken-template"].startswith(
        "the mapping template does not parse: line 1, column 8: #if has no #end"
    )
    assert messages["no-response"] == "Internal server error"
    assert "'AWS_PROXY' is not served by this proxy" in messages["lambda"]
    assert {a.headers["x-amzn-ErrorType"] for a in answers.values()} == {
        "InternalServerErrorException"
    }


def test_the_entry_point_listener_gets_the_backend_when_the_server_starts(
    backend_kind: str, request: pytest.FixtureRequest
) -> None:
    backend_url = None
    if backend_kind == "remote":
        backend_url = request.getfixturevalue("moto_server").url
    gateway = build_gateway(Settings(port=0, backend_url=backend_url))
    server = ProxyServer(gateway, port=0, threads=4)
    server.start()
    try:
        api = Api(RunningProxy(server, backend_kind))
        api.route("GET", "/", MOCK_200, [{"statusCode": "200"}])
        api.deploy()

        answer = requests.get(api.url("/"), timeout=30)
    finally:
        server.stop()

    assert "apigateway" in [r.name for r in gateway.chain.registrations]
    assert answer.status_code == 200


def test_a_backend_that_is_down_answers_in_api_gateway_shape() -> None:
    backend = RemoteBackend(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    chain = ListenerChain([register("apigateway", ApiGatewayListener())])
    server = ProxyServer(Gateway(backend, chain), port=0, threads=2)
    server.start()
    try:
        answer = requests.get(
            f"{server.url}/restapis/someapi/dev/_user_request_/", timeout=30
        )
    finally:
        server.stop()

    assert answer.status_code == 502
    assert answer.headers["x-amzn-ErrorType"] == "BadGateway"
    assert "unreachable" in answer.json()["message"]
