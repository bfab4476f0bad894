"""DynamoDB TTL: delete expired items in the background, as DynamoDB does, and
mark their stream records as TTL deletions.

moto stores `UpdateTimeToLive` but never deletes an item whose TTL has passed.
This listener sweeps every `interval` seconds (env
`PROXY_DYNAMODB_TTL_INTERVAL`, default 30): for each table whose TTL is
enabled, it scans for items whose TTL attribute is a number of epoch seconds
in the past (and, as DynamoDB, not more than five years in the past) and
deletes each with a condition that the attribute still holds the value it
scanned, so an item updated meanwhile survives. An expired item is therefore
gone at most one interval plus one sweep after its TTL, where DynamoDB
promises only "within a few days". Expired items stay readable until then, as
in DynamoDB.

Both backends are swept through the API, the way a client would be: moto's
DeleteItem writes the REMOVE stream record (with the old image when the stream
view includes it). DynamoDB marks a TTL deletion's record with a `userIdentity`
of type `Service` and principal `dynamodb.amazonaws.com` (GetRecords spells the
fields `Type` and `PrincipalId`, Lambda events `type` and `principalId`). moto
has no such field, so the listener remembers each deletion (table, keys, time)
for the 24 hours a stream keeps records, and adds `userIdentity` to the
matching REMOVE records of the GetRecords responses that pass through the
proxy. With the in-process backend every reader goes through the proxy, so
every reader sees it. With a remote backend, a reader that asks the moto
server directly (or a Lambda event source mapping inside moto) gets the
record without `userIdentity`; and the deletions of a proxy that restarted
are no longer marked.

The sweep covers the accounts and regions of the DynamoDB requests the proxy
has seen, and moto's default account in us-east-1 from the start.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import Headers

from proxy.backend import Backend
from proxy.errors import ListenerLoadError, ProxyError
from proxy.listener import ListenerContext
from proxy.listeners._aws import Caller, backend_request, caller
from proxy.messages import Body, Response

log = logging.getLogger(__name__)

DYNAMODB = "DynamoDB_20120810."
STREAMS = "DynamoDBStreams_20120810."
# The GetRecords API spells the fields capitalised; Lambda's event records, which
# moto builds itself, spell them `type` and `principalId`.
TTL_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
# DynamoDB leaves alone items whose TTL is more than five years in the past.
OLDEST_SECONDS = 5 * 365 * 24 * 3600
# How long a deletion is remembered: the stream's retention.
REMEMBER_SECONDS = 24 * 3600
# Slack around a deletion's time when matching its stream record's time.
CLOCK_SLACK_SECONDS = 2.0


class DynamoDbError(Exception):
    """The backend refused a call that the sweep makes."""


def sweep_interval(env: Mapping[str, str] = os.environ) -> float:
    """Seconds between sweeps, from `PROXY_DYNAMODB_TTL_INTERVAL`."""
    text = env.get("PROXY_DYNAMODB_TTL_INTERVAL", "30")
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ListenerLoadError(
            f"PROXY_DYNAMODB_TTL_INTERVAL={text!r} is not a positive number of "
            "seconds; fix or unset it"
        )
    return value


def expired_filter(attribute: str, now: float) -> dict[str, Any]:
    """The Scan parameters that select items whose TTL `attribute` passed.

    The type test comes first: DynamoDB compares a string with a number as
    false, moto raises (a 500), and moto's AND stops at the first false.
    """
    return {
        "FilterExpression": (
            "attribute_type(#ttl, :number) AND #ttl < :now AND #ttl > :oldest"
        ),
        "ExpressionAttributeNames": {"#ttl": attribute},
        "ExpressionAttributeValues": {
            ":number": {"S": "N"},
            ":now": {"N": str(int(now))},
            ":oldest": {"N": str(int(now) - OLDEST_SECONDS)},
        },
    }


def item_key(item: Mapping[str, Any], key_names: list[str]) -> dict[str, Any]:
    """The primary key of `item`."""
    return {name: item[name] for name in key_names}


def canonical(value: Any) -> str:
    """A JSON text that is equal for equal values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def record_time(record: Mapping[str, Any]) -> float | None:
    """A stream record's ApproximateCreationDateTime in epoch seconds."""
    value = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    return None


def table_of_iterator(shard_iterator: str) -> str | None:
    """The table ARN in a moto shard iterator (`<table arn>/stream/...`)."""
    table, found, _ = shard_iterator.partition("/stream/")
    return table if found and table.startswith("arn:") else None


@dataclass(frozen=True)
class Deletion:
    """One item the sweep deleted, and when."""

    table_arn: str
    keys: str
    started: float
    finished: float


def mark_ttl_records(
    records: list[dict[str, Any]], table_arn: str | None, deletions: list[Deletion]
) -> int:
    """Add `userIdentity` to the REMOVE records that are TTL deletions; returns
    how many it marked."""
    marked = 0
    for record in records:
        if record.get("eventName") != "REMOVE" or record.get("userIdentity"):
            continue
        keys = canonical(record.get("dynamodb", {}).get("Keys"))
        when = record_time(record)
        for deletion in deletions:
            if deletion.keys != keys:
                continue
            if table_arn is not None and deletion.table_arn != table_arn:
                continue
            if when is not None and not (
                deletion.started - CLOCK_SLACK_SECONDS
                <= when
                <= deletion.finished + CLOCK_SLACK_SECONDS
            ):
                continue
            record["userIdentity"] = dict(TTL_IDENTITY)
            marked += 1
            break
    return marked


class DynamoDbTtlListener:
    """Deletes expired items in the background and marks their records."""

    # Global: it watches DynamoDB and DynamoDB Streams requests alike.
    service: str | None = None
    order = 60

    def __init__(self, interval: float | None = None) -> None:
        self.interval = sweep_interval() if interval is None else interval
        self._backend: Backend | None = None
        self._callers: set[Caller] = {Caller()}
        self._deletions: list[Deletion] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, context: ListenerContext) -> None:
        """Start sweeping `backend`."""
        self._backend = context.backend
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="dynamodb-ttl", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping; a sweep in progress ends after its current call."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    # The listener protocol.

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> bool:
        target = headers.get("X-Amz-Target", "")
        if target.startswith((DYNAMODB, STREAMS)):
            who = caller(headers)
            if who not in self._callers:
                with self._lock:
                    self._callers.add(who)
        return True

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Response | None:
        if headers.get("X-Amz-Target") != STREAMS + "GetRecords":
            return None
        if response.status_code != 200 or not isinstance(data, bytes):
            return None
        with self._lock:
            deletions = list(self._deletions)
        if not deletions:
            return None
        document = json.loads(response.content)
        iterator = json.loads(data or b"{}").get("ShardIterator", "")
        table_arn = table_of_iterator(iterator)
        if not mark_ttl_records(document.get("Records", []), table_arn, deletions):
            return None
        response.body = json.dumps(document).encode()
        response.headers["Content-Length"] = str(len(response.body))
        return response

    # The sweep.

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.sweep()
            except (ProxyError, DynamoDbError) as exc:
                log.warning("DynamoDB TTL sweep stopped early: %s", exc)
            except Exception:
                log.exception("DynamoDB TTL sweep failed; trying again next time")

    def sweep(self, now: float | None = None) -> int:
        """Delete the expired items of every TTL-enabled table; returns how many."""
        with self._lock:
            callers = sorted(self._callers, key=lambda c: (c.access_key, c.region))
            cutoff = time.time() - REMEMBER_SECONDS
            self._deletions = [d for d in self._deletions if d.finished > cutoff]
        deleted = 0
        for who in callers:
            for table in self._tables(who):
                if self._stopping.is_set():
                    return deleted
                deleted += self._sweep_table(who, table, now)
        return deleted

    def _sweep_table(self, who: Caller, table: str, now: float | None) -> int:
        ttl = self._call(who, "DescribeTimeToLive", {"TableName": table})
        description = ttl.get("TimeToLiveDescription", {})
        attribute = description.get("AttributeName")
        if description.get("TimeToLiveStatus") != "ENABLED" or not attribute:
            return 0
        schema = self._call(who, "DescribeTable", {"TableName": table})["Table"]
        key_names = [k["AttributeName"] for k in schema["KeySchema"]]
        moment = time.time() if now is None else now

        deleted = 0
        for item in self._expired(who, table, attribute, moment):
            started = time.time()
            key = item_key(item, key_names)
            try:
                self._call(
                    who,
                    "DeleteItem",
                    {
                        "TableName": table,
                        "Key": key,
                        "ConditionExpression": "#ttl = :seen",
                        "ExpressionAttributeNames": {"#ttl": attribute},
                        "ExpressionAttributeValues": {":seen": item[attribute]},
                    },
                )
            except DynamoDbError as exc:
                log.debug("TTL delete in %s skipped: %s", table, exc)
                continue
            deletion = Deletion(
                schema["TableArn"], canonical(key), started, time.time()
            )
            with self._lock:
                self._deletions.append(deletion)
            deleted += 1
        if deleted:
            log.info("DynamoDB TTL deleted %d expired items from %s", deleted, table)
        return deleted

    def _tables(self, who: Caller) -> Iterator[str]:
        request: dict[str, Any] = {}
        while True:
            page = self._call(who, "ListTables", request)
            yield from page.get("TableNames", [])
            if not page.get("LastEvaluatedTableName"):
                return
            request["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]

    def _expired(
        self, who: Caller, table: str, attribute: str, now: float
    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": table, **expired_filter(attribute, now)}
        while True:
            page = self._call(who, "Scan", request)
            yield from page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _call(self, who: Caller, operation: str, body: dict[str, Any]) -> Any:
        assert self._backend is not None
        request = backend_request(
            who,
            "dynamodb",
            "POST",
            "/",
            json.dumps(body).encode(),
            {
                "X-Amz-Target": DYNAMODB + operation,
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        answer = self._backend.send(request)
        document = json.loads(answer.content or b"{}")
        if answer.status_code != 200:
            raise DynamoDbError(
                f"{operation} answered {answer.status_code}: "
                f"{document.get('__type', '')} {document.get('message', '')}"
            )
        return document
