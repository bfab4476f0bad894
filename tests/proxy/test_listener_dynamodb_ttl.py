"""DynamoDB TTL through the proxy, both backends: expired items disappear in the
background, and their stream records say the service removed them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from proxy.errors import ListenerLoadError
from proxy.listener import register
from proxy.listeners.dynamodb_ttl import (
    TTL_IDENTITY,
    Deletion,
    DynamoDbTtlListener,
    mark_ttl_records,
    record_time,
    sweep_interval,
    table_of_iterator,
)
from tests.proxy.proxy_support import ProxyFactory, RunningProxy, unique

INTERVAL = 0.3


def _table(proxy: RunningProxy) -> tuple[Any, str]:
    dynamodb = proxy.client("dynamodb")
    table = unique("ttl")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    )
    dynamodb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    return dynamodb, table


def _wait_gone(dynamodb: Any, table: str, key: str, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while "Item" in dynamodb.get_item(TableName=table, Key={"id": {"S": key}}):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{key} still there after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def _records(proxy: RunningProxy, dynamodb: Any, table: str) -> list[dict[str, Any]]:
    streams = proxy.client("dynamodbstreams")
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = streams.get_records(ShardIterator=iterator)[
        "Records"
    ]
    return records


def test_expired_items_disappear_with_ttl_stream_records(
    make_proxy: ProxyFactory,
) -> None:
    proxy = make_proxy(register("ttl", DynamoDbTtlListener(INTERVAL)))
    dynamodb, table = _table(proxy)
    now = int(time.time())
    items = {
        "expired": {"N": str(now - 10)},
        "fresh": {"N": str(now + 3600)},
        "ancient": {"N": str(now - 6 * 365 * 24 * 3600)},
        "text": {"S": str(now - 10)},
        "manual": {"N": str(now + 3600)},
    }
    for key, expires in items.items():
        dynamodb.put_item(TableName=table, Item={"id": {"S": key}, "expires": expires})

    dynamodb.delete_item(TableName=table, Key={"id": {"S": "manual"}})
    waited = _wait_gone(dynamodb, table, "expired")
    time.sleep(2 * INTERVAL)
    left = dynamodb.scan(TableName=table)["Items"]
    removes = [
        r for r in _records(proxy, dynamodb, table) if r["eventName"] == "REMOVE"
    ]
    by_key = {r["dynamodb"]["Keys"]["id"]["S"]: r for r in removes}

    assert waited < 5 * INTERVAL + 2
    assert sorted(i["id"]["S"] for i in left) == ["ancient", "fresh", "text"]
    assert sorted(by_key) == ["expired", "manual"]
    assert by_key["expired"]["userIdentity"] == TTL_IDENTITY
    assert by_key["expired"]["dynamodb"]["OldImage"]["expires"] == items["expired"]
    assert "userIdentity" not in by_key["manual"]


def test_a_renewed_item_survives_and_the_sweep_stops_with_the_proxy(
    make_proxy: ProxyFactory,
) -> None:
    listener = DynamoDbTtlListener(INTERVAL)
    proxy = make_proxy(register("ttl", listener))
    dynamodb, table = _table(proxy)
    now = int(time.time())

    dynamodb.put_item(
        TableName=table,
        Item={"id": {"S": "renewed"}, "expires": {"N": str(now - 5)}},
    )
    dynamodb.put_item(
        TableName=table,
        Item={"id": {"S": "renewed"}, "expires": {"N": str(now + 3600)}},
    )
    time.sleep(3 * INTERVAL)
    kept = dynamodb.get_item(TableName=table, Key={"id": {"S": "renewed"}})
    proxy.server.stop()

    assert "Item" in kept
    assert not [t for t in threading.enumerate() if t.name == "dynamodb-ttl"]


def test_record_marking_matches_table_keys_and_time() -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/t"
    deletion = Deletion(table, '{"id":{"S":"a"}}', 100.0, 101.0)

    def remove(key: str, when: float) -> dict[str, Any]:
        return {
            "eventName": "REMOVE",
            "dynamodb": {
                "Keys": {"id": {"S": key}},
                "ApproximateCreationDateTime": when,
            },
        }

    records = [remove("a", 100.5), remove("b", 100.5), remove("a", 500.0)]
    other_table = [remove("a", 100.5)]

    assert mark_ttl_records(records, table, [deletion]) == 1
    assert [r.get("userIdentity") for r in records] == [TTL_IDENTITY, None, None]
    assert mark_ttl_records(other_table, table + "2", [deletion]) == 0
    assert table_of_iterator(table + "/stream/2026|1|abc") == table
    assert table_of_iterator("opaque") is None


@pytest.mark.parametrize(
    "value",
    [1700000000, 1700000000.0, "2023-11-14T22:13:20", "2023-11-14T22:13:20+00:00"],
    ids=["int", "float", "naive-iso", "utc-iso"],
)
def test_record_times_are_read_as_utc(value: object) -> None:
    record = {"dynamodb": {"ApproximateCreationDateTime": value}}

    assert record_time(record) == 1700000000.0


def test_the_interval_comes_from_the_environment() -> None:
    assert sweep_interval({}) == 30
    assert sweep_interval({"PROXY_DYNAMODB_TTL_INTERVAL": "0.5"}) == 0.5
    with pytest.raises(ListenerLoadError, match="'0' is not a positive number"):
        sweep_interval({"PROXY_DYNAMODB_TTL_INTERVAL": "0"})
    with pytest.raises(ListenerLoadError, match="'soon' is not a positive number"):
        sweep_interval({"PROXY_DYNAMODB_TTL_INTERVAL": "soon"})
