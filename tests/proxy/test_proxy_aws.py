"""boto3 against the running proxy, once per backend: the calls users make."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from botocore.exceptions import ClientError

from tests.proxy.proxy_support import RunningProxy, pinned_release, unique


def route_to_proxy(client: Any, proxy: RunningProxy) -> None:
    """Send a virtual-host request to the proxy's socket, keeping its Host.

    `bucket.localhost` does not resolve on every machine; boto3 still builds the
    virtual-host request (and signs it) itself.
    """

    def before_send(request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        request.url = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()

    client.meta.events.register("before-send.s3", before_send)


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_s3_objects_in_both_addressing_styles(proxy: RunningProxy, style: str) -> None:
    s3 = proxy.client("s3", s3={"addressing_style": style})
    if style == "virtual":
        s3 = _virtual_client(proxy)
    bucket = unique("objects")

    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/a b.txt", Body=b"hello", Metadata={"k": "v"})
    got = s3.get_object(Bucket=bucket, Key="dir/a b.txt")
    head = s3.head_object(Bucket=bucket, Key="dir/a b.txt")
    listing = s3.list_objects_v2(Bucket=bucket)

    assert got["Body"].read() == b"hello"
    assert got["Metadata"] == {"k": "v"}
    assert head["ContentLength"] == 5
    assert [o["Key"] for o in listing["Contents"]] == ["dir/a b.txt"]
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=bucket, Key="missing")
    assert raised.value.response["Error"]["Code"] == "NoSuchKey"


def _virtual_client(proxy: RunningProxy) -> Any:
    s3 = proxy.client("s3", s3={"addressing_style": "virtual"})
    s3 = __import__("boto3").client(
        "s3",
        endpoint_url=f"http://localhost:{proxy.port}",
        config=s3.meta.config,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    route_to_proxy(s3, proxy)
    return s3


def test_s3_multipart_upload(proxy: RunningProxy) -> None:
    s3 = proxy.client("s3")
    bucket = unique("multipart")
    s3.create_bucket(Bucket=bucket)
    first, last = b"a" * (5 * 1024 * 1024), b"tail"

    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")
    parts = []
    for number, data in enumerate((first, last), start=1):
        part = s3.upload_part(
            Bucket=bucket,
            Key="big",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data,
        )
        parts.append({"ETag": part["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )

    body = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(first + last).digest()


@pytest.mark.parametrize(
    ("signature", "marker"), [("s3v4", "X-Amz-Credential"), ("s3", "AWSAccessKeyId")]
)
def test_s3_presigned_urls(proxy: RunningProxy, signature: str, marker: str) -> None:
    s3 = proxy.client("s3", signature_version=signature)
    bucket = unique("presigned")
    s3.create_bucket(Bucket=bucket)

    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
    )
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
    )
    put = requests.put(put_url, data=b"signed body", timeout=30)
    get = requests.get(get_url, timeout=30)

    assert marker in get_url
    assert put.status_code == 200
    assert get.status_code == 200
    assert get.content == b"signed body"


def test_s3_upload_larger_than_the_buffer_streams_through(proxy: RunningProxy) -> None:
    s3 = proxy.client("s3")
    bucket = unique("large")
    s3.create_bucket(Bucket=bucket)
    data = bytes(range(256)) * (40 * 1024 * 12 // 3)  # 10 MiB, over the buffer

    s3.put_object(Bucket=bucket, Key="large", Body=data)
    body = s3.get_object(Bucket=bucket, Key="large")["Body"].read()

    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_sqs_send_receive_delete(proxy: RunningProxy) -> None:
    sqs = proxy.client("sqs")
    queue = sqs.create_queue(QueueName=unique("queue"))["QueueUrl"]

    sqs.send_message(QueueUrl=queue, MessageBody="first")
    received = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)["Messages"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=received[0]["ReceiptHandle"])
    left = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )

    assert [m["Body"] for m in received] == ["first"]
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"
    with pytest.raises(ClientError) as raised:
        sqs.get_queue_url(QueueName=unique("absent"))
    assert "NonExistentQueue" in raised.value.response["Error"]["Code"]


def test_sns_publish_reaches_a_subscribed_queue(proxy: RunningProxy) -> None:
    sns, sqs = proxy.client("sns"), proxy.client("sqs")
    topic = sns.create_topic(Name=unique("topic"))["TopicArn"]
    queue = sqs.create_queue(QueueName=unique("subscriber"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]

    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sns.publish(TopicArn=topic, Message="news")
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)["Messages"]

    assert json.loads(messages[0]["Body"])["Message"] == "news"
    with pytest.raises(ClientError) as raised:
        sns.publish(TopicArn=topic + "-absent", Message="x")
    assert raised.value.response["Error"]["Code"] == "NotFound"


def test_dynamodb_table_items(proxy: RunningProxy) -> None:
    dynamodb = proxy.client("dynamodb")
    table = unique("table")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    dynamodb.put_item(TableName=table, Item={"id": {"S": "1"}, "n": {"N": "7"}})
    item = dynamodb.get_item(TableName=table, Key={"id": {"S": "1"}})["Item"]

    assert item == {"id": {"S": "1"}, "n": {"N": "7"}}
    with pytest.raises(ClientError) as raised:
        dynamodb.get_item(TableName=unique("absent"), Key={"id": {"S": "1"}})
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_iam_and_sts(proxy: RunningProxy) -> None:
    iam, sts = proxy.client("iam"), proxy.client("sts")
    user = unique("user")
    role = iam.create_role(
        RoleName=unique("role"),
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}),
    )["Role"]

    iam.create_user(UserName=user)
    users = [u["UserName"] for u in iam.list_users()["Users"]]
    identity = sts.get_caller_identity()
    assumed = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="session")

    assert user in users
    assert identity["Account"] == "123456789012"
    assert assumed["Credentials"]["AccessKeyId"]
    with pytest.raises(ClientError) as raised:
        iam.get_user(UserName=unique("absent"))
    assert raised.value.response["Error"]["Code"] == "NoSuchEntity"


def test_kinesis_put_and_get_records(proxy: RunningProxy) -> None:
    kinesis = proxy.client("kinesis")
    stream = unique("stream")
    kinesis.create_stream(StreamName=stream, ShardCount=1)

    kinesis.put_record(StreamName=stream, Data=b"record", PartitionKey="p")
    shard = kinesis.describe_stream(StreamName=stream)["StreamDescription"]["Shards"][
        0
    ]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]

    assert [r["Data"] for r in records] == [b"record"]


def test_api_gateway_resources(proxy: RunningProxy) -> None:
    apigateway = proxy.client("apigateway")
    api = apigateway.create_rest_api(name=unique("api"))
    root = apigateway.get_resources(restApiId=api["id"])["items"][0]

    apigateway.create_resource(
        restApiId=api["id"], parentId=root["id"], pathPart="pets"
    )
    paths = {r["path"] for r in apigateway.get_resources(restApiId=api["id"])["items"]}

    assert paths == {"/", "/pets"}
    with pytest.raises(ClientError) as raised:
        apigateway.get_rest_api(restApiId="absent")
    assert raised.value.response["Error"]["Code"] == "NotFoundException"


def test_health_reports_backend_services_and_moto(proxy: RunningProxy) -> None:
    health = requests.get(proxy.url + "/_proxy/health", timeout=30).json()

    assert health["backend"]["kind"] == proxy.kind
    assert {"s3", "sqs", "dynamodb"} <= set(health["services"])
    assert {k: health[k] for k in ("distribution", "version", "provenance")} == (
        pinned_release()
    )
    assert health["version"] == __import__("moto").__version__


def test_concurrent_clients_are_served(proxy: RunningProxy) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sqs = proxy.client("sqs", max_pool_connections=8)
    queue = sqs.create_queue(QueueName=unique("concurrent"))["QueueUrl"]
    started = time.monotonic()

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: sqs.send_message(QueueUrl=queue, MessageBody=str(i)),
                range(80),
            )
        )

    assert all(r["ResponseMetadata"]["HTTPStatusCode"] == 200 for r in results)
    assert time.monotonic() - started < 60
