"""SNS to HTTP endpoints through the proxy, both backends: confirmation,
notifications only once confirmed, signatures, raw delivery, retries."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from proxy.errors import ListenerLoadError
from proxy.listener import register
from proxy.listeners.sns_http import (
    DeliveryPolicy,
    SnsHttpListener,
    decode_endpoint,
    encode_endpoint,
    failed,
    published,
    restore_endpoints,
    string_to_sign,
    verify,
)
from tests.proxy.proxy_support import ProxyFactory, RunningProxy, unique

FAST_RETRIES = DeliveryPolicy(retries=3, delay=0.2, max_delay=0.5, timeout=5)


@dataclass
class Received:
    """One POST the endpoint received."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, str]:
        document: dict[str, str] = json.loads(self.body)
        return document


@dataclass
class Endpoint:
    """An HTTP(S) server on a loopback port that records POSTs and can fail."""

    server: ThreadingHTTPServer
    scheme: str = "http"
    received: list[Received] = field(default_factory=list)
    failures: int = 0
    attempts: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} POSTs")
                self.condition.wait(left)
            return list(self.received)


def _serve_endpoint(tls: ssl.SSLContext | None = None) -> Endpoint:
    holder: list[Endpoint] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            target = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with target.condition:
                target.attempts += 1
                failing = target.failures > 0
                if failing:
                    target.failures -= 1
                else:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    target.received.append(Received(self.path, headers, body))
                    target.condition.notify_all()
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    holder.append(Endpoint(server, "https" if tls else "http"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder[0]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = _serve_endpoint()
    yield served
    served.server.shutdown()
    served.server.server_close()


def _loopback_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def sns_proxy(make_proxy: ProxyFactory) -> RunningProxy:
    return make_proxy(register("sns-http", SnsHttpListener(FAST_RETRIES)))


def _verified(message: dict[str, str]) -> bool:
    certificate = requests.get(message["SigningCertURL"], timeout=30)
    assert certificate.status_code == 200
    return verify(message, certificate.content)


def _subscribe_and_confirm(
    proxy: RunningProxy, endpoint: Endpoint, **attributes: str
) -> tuple[Any, str, str]:
    sns = proxy.client("sns")
    topic = sns.create_topic(Name=unique("topic"))["TopicArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="http", Endpoint=endpoint.url, Attributes=attributes
    )
    confirmation = endpoint.wait_for(1)[0].message
    confirmed = requests.get(confirmation["SubscribeURL"], timeout=30)
    assert confirmed.status_code == 200
    arn = confirmed.text.split("<SubscriptionArn>")[1].split("<")[0]
    return sns, topic, arn


def test_confirmation_then_signed_notifications(
    sns_proxy: RunningProxy, endpoint: Endpoint
) -> None:
    sns = sns_proxy.client("sns")
    topic = sns.create_topic(Name=unique("topic"))["TopicArn"]

    pending = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)
    confirmation = endpoint.wait_for(1)[0]
    listed_pending = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    sns.publish(TopicArn=topic, Message="too early")
    time.sleep(0.5)
    early = list(endpoint.received)
    confirmed = requests.get(confirmation.message["SubscribeURL"], timeout=30)
    arn = confirmed.text.split("<SubscriptionArn>")[1].split("<")[0]
    attributes = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    published = sns.publish(
        TopicArn=topic,
        Message="hello",
        Subject="greeting",
        MessageAttributes={"color": {"DataType": "String", "StringValue": "red"}},
    )
    notification = endpoint.wait_for(2)[1]
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    unsubscribed = requests.get(notification.message["UnsubscribeURL"], timeout=30)
    left = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]

    assert pending["SubscriptionArn"] == "pending confirmation"
    assert [s["SubscriptionArn"] for s in listed_pending] == ["PendingConfirmation"]
    assert confirmation.path == "/hook"
    assert confirmation.headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert confirmation.headers["x-amz-sns-topic-arn"] == topic
    assert confirmation.message["Type"] == "SubscriptionConfirmation"
    assert confirmation.message["TopicArn"] == topic
    assert confirmation.message["Token"] in confirmation.message["SubscribeURL"]
    assert _verified(confirmation.message)
    assert len(early) == 1, "a notification arrived before the confirmation"
    assert confirmed.status_code == 200
    assert arn.startswith(topic + ":")
    assert attributes["PendingConfirmation"] == "false"
    assert attributes["Endpoint"] == endpoint.url
    assert [(s["SubscriptionArn"], s["Endpoint"]) for s in listed] == [
        (arn, endpoint.url)
    ]
    assert notification.headers["x-amz-sns-message-type"] == "Notification"
    assert notification.headers["x-amz-sns-subscription-arn"] == arn
    message = notification.message
    assert message["Type"] == "Notification"
    assert message["MessageId"] == published["MessageId"]
    assert (message["Message"], message["Subject"]) == ("hello", "greeting")
    assert message["MessageAttributes"] == {"color": {"Type": "String", "Value": "red"}}
    assert message["SignatureVersion"] == "1"
    assert _verified(message)
    assert not _verified({**message, "Message": "tampered"})
    assert unsubscribed.status_code == 200
    assert left == []


def test_a_pending_subscription_says_so(
    sns_proxy: RunningProxy, endpoint: Endpoint
) -> None:
    sns = sns_proxy.client("sns")
    topic = sns.create_topic(Name=unique("topic"))["TopicArn"]

    arn = sns.subscribe(
        TopicArn=topic,
        Protocol="http",
        Endpoint=endpoint.url,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    endpoint.wait_for(1)
    attributes = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    bad = requests.get(
        sns_proxy.url,
        params={"Action": "ConfirmSubscription", "TopicArn": topic, "Token": "nope"},
        timeout=30,
    )

    assert arn.startswith(topic + ":")
    assert attributes["PendingConfirmation"] == "true"
    assert bad.status_code == 400
    assert "<Code>InvalidParameter</Code>" in bad.text


def test_raw_delivery_and_retries_after_failures(
    sns_proxy: RunningProxy, endpoint: Endpoint
) -> None:
    sns, topic, arn = _subscribe_and_confirm(sns_proxy, endpoint)
    sns.set_topic_attributes(
        TopicArn=topic, AttributeName="SignatureVersion", AttributeValue="2"
    )

    endpoint.failures = 2
    sns.publish(TopicArn=topic, Message="after two failures")
    retried = endpoint.wait_for(2)[1]
    sns.set_subscription_attributes(
        SubscriptionArn=arn, AttributeName="RawMessageDelivery", AttributeValue="true"
    )
    sns.publish(TopicArn=topic, Message="raw body")
    raw = endpoint.wait_for(3)[2]

    assert endpoint.attempts == 5
    assert retried.message["Message"] == "after two failures"
    assert retried.message["SignatureVersion"] == "2"
    assert _verified(retried.message)
    assert raw.body == b"raw body"
    assert raw.headers["x-amz-sns-rawdelivery"] == "true"


def test_an_endpoint_that_keeps_failing_is_given_up(
    make_proxy: ProxyFactory, endpoint: Endpoint
) -> None:
    policy = DeliveryPolicy(retries=2, delay=0.1, max_delay=0.1, timeout=5)
    proxy = make_proxy(register("sns-http", SnsHttpListener(policy)))
    sns, topic, _ = _subscribe_and_confirm(proxy, endpoint)

    endpoint.failures = 10
    sns.publish(TopicArn=topic, Message="lost")
    time.sleep(1.0)

    assert endpoint.attempts == 1 + 3
    assert len(endpoint.received) == 1


@pytest.mark.parametrize(
    ("retry", "wait"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 20.0)], ids=str
)
def test_retries_back_off_exponentially_up_to_the_limit(
    retry: int, wait: float
) -> None:
    assert DeliveryPolicy().wait_before(retry) == wait


def test_the_delivery_policy_comes_from_the_environment() -> None:
    policy = DeliveryPolicy.from_env(
        {"PROXY_SNS_RETRIES": "5", "PROXY_SNS_VERIFY_TLS": "false"}
    )

    assert (policy.retries, policy.delay, policy.verify) == (5, 1.0, False)
    assert DeliveryPolicy.from_env({}).verify is True
    assert DeliveryPolicy.from_env({"PROXY_SNS_VERIFY_TLS": "/ca.pem"}).verify == (
        "/ca.pem"
    )
    with pytest.raises(ListenerLoadError, match="PROXY_SNS_RETRIES='many'"):
        DeliveryPolicy.from_env({"PROXY_SNS_RETRIES": "many"})
    assert [failed(s) for s in (200, 404, 499, 500, 102)] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_published_messages_of_a_batch() -> None:
    first, second = (
        "PublishBatchRequestEntries.member.1.",
        ("PublishBatchRequestEntries.member.2."),
    )
    attribute = first + "MessageAttributes.entry.1."
    params = {
        "Action": "PublishBatch",
        first + "Id": "a",
        first + "Message": "plain",
        attribute + "Name": "n",
        attribute + "Value.DataType": "Number",
        attribute + "Value.StringValue": "5",
        second + "Id": "b",
        second + "Message": '{"default": "d", "http": "h"}',
        second + "MessageStructure": "json",
    }

    assert published(params) == [
        ("plain", {"n": {"Type": "Number", "Value": "5"}}),
        ("d", {}),
        ("h", {}),
    ]


def test_an_https_endpoint_with_a_trusted_certificate(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    cert_path, key_path = _loopback_certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    secure = _serve_endpoint(tls)
    policy = DeliveryPolicy(retries=1, delay=0.1, timeout=5, verify=str(cert_path))
    proxy = make_proxy(register("sns-http", SnsHttpListener(policy)))
    sns = proxy.client("sns")
    topic = sns.create_topic(Name=unique("topic"))["TopicArn"]

    try:
        sns.subscribe(TopicArn=topic, Protocol="https", Endpoint=secure.url)
        confirmation = secure.wait_for(1)[0].message
        requests.get(confirmation["SubscribeURL"], timeout=30)
        sns.publish(TopicArn=topic, Message="over tls")
        notification = secure.wait_for(2)[1].message
        proxy.server.stop()
    finally:
        secure.server.shutdown()
        secure.server.server_close()

    assert secure.url.startswith("https://")
    assert notification["Message"] == "over tls"
    assert not [t for t in threading.enumerate() if t.name.startswith("sns-delivery")]


def test_pure_helpers() -> None:
    url = "https://example.test/a?b=c&d"
    body = (
        b"<Endpoint>http://127.0.0.1:9/_proxy/sns/deliver/"
        + encode_endpoint(url).encode()
        + b"</Endpoint>"
    )

    assert decode_endpoint(encode_endpoint(url)) == url
    assert (
        restore_endpoints(body)
        == b"<Endpoint>" + url.replace("&", "&amp;").encode() + b"</Endpoint>"
    )
    assert string_to_sign(
        {"Type": "Notification", "Message": "m", "MessageId": "1", "Other": "x"}
    ) == (b"Message\nm\nMessageId\n1\nType\nNotification\n")
