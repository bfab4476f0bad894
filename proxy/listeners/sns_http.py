"""SNS delivery to HTTP and HTTPS endpoints, as SNS does it.

moto 5.2.5 marks an http(s) subscription confirmed at once, sends no
`SubscriptionConfirmation`, and on Publish POSTs a notification itself, in the
request's thread, with no SNS headers, no raw delivery, a signing certificate
URL that points at AWS, and no retry (an endpoint that is down fails the
Publish with a 500). This listener takes delivery over:

- Subscribe with protocol http or https is forwarded with the endpoint replaced
  by this proxy's delivery URL (`/_proxy/sns/deliver/<endpoint, encoded>`), so
  moto hands its notifications to the proxy and never reaches the endpoint.
  Responses that show the endpoint (ListSubscriptions, GetSubscriptionAttributes
  ...) are rewritten back to the real one.
- After the subscription is created, the endpoint receives a signed
  `SubscriptionConfirmation` whose `SubscribeURL` points at this proxy
  (`?Action=ConfirmSubscription&TopicArn=...&Token=...`). Until it is
  confirmed, Subscribe answers `pending confirmation` (unless
  `ReturnSubscriptionArn` is true), GetSubscriptionAttributes says
  `PendingConfirmation` true, and notifications are dropped.
- A notification moto hands over for a confirmed subscription is signed and
  POSTed with SNS's headers and body, raw when `RawMessageDelivery` is true.
  moto has already applied filter policies and `MessageStructure`.
- Messages are signed with a key generated when the listener starts, per the
  topic's `SignatureVersion` (1: SHA1withRSA, the default; 2: SHA256withRSA);
  the certificate is served at the message's `SigningCertURL`.
- Deliveries run in background threads, stopped with the proxy. A delivery
  that fails (connection error, timeout, a status outside 200-499, as SNS
  counts failures) is retried `retries` times, waiting `delay`, then twice that,
  and so on up to `max_delay` (defaults 3, 1 s and 20 s; env
  `PROXY_SNS_RETRIES`, `PROXY_SNS_RETRY_DELAY`, `PROXY_SNS_MAX_DELAY`); each
  attempt times out after `PROXY_SNS_TIMEOUT` seconds (15, as SNS). Then the
  message is dropped and a warning logged. https endpoints need a certificate
  the proxy trusts, as SNS does; `PROXY_SNS_VERIFY_TLS` may name a CA bundle
  or be `false` for self-signed local endpoints.

Subscriptions, tokens and confirmations live in the proxy's memory: after the
proxy restarts in front of a remote moto server, the subscriptions made before
are unknown to it and receive nothing until subscribed again. The backend must
reach the proxy at the URL it listens on.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import heapq
import itertools
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from xml.sax.saxutils import escape

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from werkzeug.datastructures import Headers

from proxy.errors import ListenerLoadError
from proxy.listener import ListenerContext
from proxy.listeners._aws import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_REGION,
    Caller,
    backend_request,
    caller,
)
from proxy.messages import Body, Request, Response
from proxy.render import error_response
from proxy.services import QUERY

log = logging.getLogger(__name__)

PREFIX = "/_proxy/sns/"
DELIVER_PREFIX = PREFIX + "deliver/"
SNS_VERSION = "2010-03-31"
USER_AGENT = "Amazon Simple Notification Service Agent"
PENDING = "pending confirmation"

_DELIVERY_URL = re.compile(
    rb"https?://[^<>\"'\s]*?"
    + re.escape(DELIVER_PREFIX.encode())
    + rb"([A-Za-z0-9_-]+)"
)
_PENDING_ATTRIBUTE = re.compile(
    rb"(<key>PendingConfirmation</key>\s*<value>)false(</value>)"
)
_ARN = re.compile(rb"<SubscriptionArn>([^<]*)</SubscriptionArn>")


# Pure functions: message building, signing, endpoint encoding, parsing.


def encode_endpoint(endpoint: str) -> str:
    """The endpoint as one URL path segment."""
    return base64.urlsafe_b64encode(endpoint.encode()).decode().rstrip("=")


def decode_endpoint(segment: str) -> str:
    """The endpoint that `encode_endpoint` encoded."""
    padded = segment + "=" * (-len(segment) % 4)
    return base64.urlsafe_b64decode(padded.encode()).decode()


def restore_endpoints(body: bytes) -> bytes:
    """`body` with every delivery URL replaced by the endpoint it stands for."""

    def real(match: re.Match[bytes]) -> bytes:
        endpoint = decode_endpoint(match.group(1).decode())
        return escape(endpoint).encode()

    return _DELIVERY_URL.sub(real, body)


def string_to_sign(message: Mapping[str, str]) -> bytes:
    """The canonical form SNS signs: name and value lines of fixed keys."""
    if message["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = [
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    lines = [f"{key}\n{message[key]}\n" for key in keys if key in message]
    return "".join(lines).encode()


def _hash(version: str) -> hashes.HashAlgorithm:
    return hashes.SHA256() if version == "2" else hashes.SHA1()


def sign(message: Mapping[str, str], key: rsa.RSAPrivateKey, version: str) -> str:
    """The base64 `Signature` of `message` for `SignatureVersion` `version`."""
    signature = key.sign(string_to_sign(message), padding.PKCS1v15(), _hash(version))
    return base64.b64encode(signature).decode()


def verify(message: Mapping[str, str], certificate_pem: bytes) -> bool:
    """Whether `message`'s signature verifies against the certificate."""
    public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(
            base64.b64decode(message["Signature"]),
            string_to_sign(message),
            padding.PKCS1v15(),
            _hash(message["SignatureVersion"]),
        )
    except InvalidSignature:
        return False
    return True


def timestamp(moment: float | None = None) -> str:
    """SNS's timestamp: UTC, ISO 8601, milliseconds."""
    when = datetime.datetime.fromtimestamp(
        time.time() if moment is None else moment, datetime.UTC
    )
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def action_params(path: str, data: Body, headers: Headers) -> dict[str, str]:
    """The parameters of a query-protocol call, from the query string and a
    form body (first value of each name); {} for any other request."""
    query = path.partition("?")[2]
    form = isinstance(data, bytes) and headers.get("Content-Type", "").startswith(
        "application/x-www-form-urlencoded"
    )
    if "Action=" not in query and not form:
        return {}
    params = dict(parse_qsl(query, keep_blank_values=True))
    if form and isinstance(data, bytes):
        for name, value in parse_qsl(data.decode("utf-8", "replace"), True):
            params.setdefault(name, value)
    return params


def entry_attributes(params: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The `<prefix>.entry.N.key/value` map of a query call."""
    found = {}
    for name, key in params.items():
        if name.startswith(prefix + ".entry.") and name.endswith(".key"):
            value = params.get(name[: -len("key")] + "value")
            if value is not None:
                found[key] = value
    return found


def published(params: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """The messages of a Publish or PublishBatch call, each as the texts it
    may be delivered as (all of a `MessageStructure=json` document's values)
    and its message attributes in the shape of an HTTP notification."""
    if params.get("Action") == "Publish":
        prefixes = [""]
    else:
        prefixes = list(_batch_entries(params))
    found: list[tuple[str, dict[str, Any]]] = []
    for prefix in prefixes:
        message = params.get(prefix + "Message", "")
        texts = [message]
        if params.get(prefix + "MessageStructure") == "json":
            try:
                document = json.loads(message)
            except ValueError:
                document = {}
            if isinstance(document, dict):
                texts = [str(value) for value in document.values()]
        attributes = message_attributes(params, prefix + "MessageAttributes")
        found.extend((text, attributes) for text in texts)
    return found


def _batch_entries(params: Mapping[str, str]) -> Iterator[str]:
    for n in itertools.count(1):
        entry = f"PublishBatchRequestEntries.member.{n}."
        if entry + "Id" not in params:
            return
        yield entry


def message_attributes(params: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """`MessageAttributes` of a query call as an HTTP notification shows them."""
    attributes: dict[str, Any] = {}
    for n in itertools.count(1):
        entry = f"{prefix}.entry.{n}."
        name = params.get(entry + "Name")
        if name is None:
            return attributes
        value = params.get(entry + "Value.StringValue")
        if value is None:
            value = params.get(entry + "Value.BinaryValue", "")
        kind = params.get(entry + "Value.DataType", "String")
        attributes[name] = {"Type": kind, "Value": value}
    return attributes


@dataclass(frozen=True)
class DeliveryPolicy:
    """How often and how soon a failed delivery is tried again, how long an
    attempt may take, and how an https endpoint's certificate is checked
    (`verify`: True, False, or the path of a CA bundle)."""

    retries: int = 3
    delay: float = 1.0
    max_delay: float = 20.0
    timeout: float = 15.0
    verify: bool | str = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DeliveryPolicy:
        """The policy with `PROXY_SNS_*` overrides."""
        text = env.get("PROXY_SNS_VERIFY_TLS", "true")
        verify: bool | str = text
        if text.lower() in ("true", "1", "yes"):
            verify = True
        elif text.lower() in ("false", "0", "no"):
            verify = False
        return cls(
            retries=int(_number(env, "PROXY_SNS_RETRIES", cls.retries)),
            delay=_number(env, "PROXY_SNS_RETRY_DELAY", cls.delay),
            max_delay=_number(env, "PROXY_SNS_MAX_DELAY", cls.max_delay),
            timeout=_number(env, "PROXY_SNS_TIMEOUT", cls.timeout),
            verify=verify,
        )

    def wait_before(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        return float(min(self.delay * 2 ** (retry - 1), self.max_delay))


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise ListenerLoadError(
            f"{name}={value!r} is not a number of at least 0; fix or unset it"
        )
    return number


def failed(status: int) -> bool:
    """Whether SNS counts this endpoint status as a failed attempt."""
    return not 200 <= status <= 499


# State and I/O.


class Signer:
    """A key generated at start and its self-signed certificate."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = certificate.public_bytes(serialization.Encoding.PEM)
        digest = hashlib.sha256(self.pem).hexdigest()[:32]
        self.name = f"SimpleNotificationService-{digest}.pem"


@dataclass
class Subscription:
    """An http(s) subscription this proxy delivers to."""

    arn: str
    topic_arn: str
    endpoint: str
    base_url: str
    access_key: str = DEFAULT_ACCESS_KEY
    tokens: set[str] = field(default_factory=set)
    confirmed: bool = False
    raw: bool = False


@dataclass
class Delivery:
    """One POST to an endpoint, and how many attempts it has had."""

    endpoint: str
    headers: dict[str, str]
    body: bytes
    description: str
    attempts: int = 0


class Deliverer:
    """Worker threads that POST deliveries and retry them per the policy."""

    def __init__(self, policy: DeliveryPolicy, workers: int = 4) -> None:
        self.policy = policy
        self._workers = workers
        self._due: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = policy.verify

    def start(self) -> None:
        """Start the worker threads."""
        self._stopping = False
        for number in range(self._workers):
            thread = threading.Thread(
                target=self._work, name=f"sns-delivery-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers; deliveries still waiting are dropped."""
        with self._condition:
            self._stopping = True
            dropped = len(self._due)
            self._due.clear()
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(self.policy.timeout + 1)
        self._threads.clear()
        self._session.close()
        if dropped:
            log.warning("SNS delivery stopped with %d deliveries waiting", dropped)

    def put(self, delivery: Delivery, after: float = 0.0) -> None:
        """Deliver `delivery` after `after` seconds."""
        with self._condition:
            if self._stopping:
                return
            due = time.monotonic() + after
            heapq.heappush(self._due, (due, next(self._order), delivery))
            self._condition.notify()

    def _next(self) -> Delivery | None:
        with self._condition:
            while not self._stopping:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                wait = self._due[0][0] - now if self._due else None
                self._condition.wait(wait)
            return None

    def _work(self) -> None:
        while (delivery := self._next()) is not None:
            delivery.attempts += 1
            outcome = self._post(delivery)
            if outcome is None:
                continue
            if delivery.attempts > self.policy.retries:
                log.warning(
                    "SNS gave up on %s to %s after %d attempts: %s",
                    delivery.description,
                    delivery.endpoint,
                    delivery.attempts,
                    outcome,
                )
                continue
            wait = self.policy.wait_before(delivery.attempts)
            log.info(
                "SNS %s to %s failed (%s); retry %d in %.1f s",
                delivery.description,
                delivery.endpoint,
                outcome,
                delivery.attempts,
                wait,
            )
            self.put(delivery, wait)

    def _post(self, delivery: Delivery) -> str | None:
        """None when delivered, else why not."""
        try:
            answer = self._session.post(
                delivery.endpoint,
                data=delivery.body,
                headers=delivery.headers,
                timeout=self.policy.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return type(exc).__name__
        answer.close()
        if failed(answer.status_code):
            return f"status {answer.status_code}"
        return None


class SnsHttpListener:
    """Confirms and delivers SNS subscriptions to HTTP(S) endpoints."""

    # Global: the delivery and certificate URLs and the SubscribeURL carry no
    # SNS credentials, so the gateway does not know them as SNS requests.
    service: str | None = None
    order = 40

    def __init__(self, policy: DeliveryPolicy | None = None, workers: int = 4) -> None:
        self.policy = policy or DeliveryPolicy.from_env()
        self._workers = workers
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._tokens: dict[str, str] = {}
        self._signature_versions: dict[str, str] = {}
        # Message attributes of the Publish calls in flight, by topic and text:
        # moto hands notifications over without them.
        self._in_flight: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._signer: Signer | None = None
        self._proxy_url = ""
        self._deliverer: Deliverer | None = None

    def start(self, context: ListenerContext) -> None:
        """Generate the signing key and start the delivery threads."""
        self._proxy_url = context.url.rstrip("/")
        self._signer = Signer()
        self._deliverer = Deliverer(self.policy, self._workers)
        self._deliverer.start()

    def stop(self) -> None:
        """Stop the delivery threads."""
        if self._deliverer is not None:
            self._deliverer.stop()

    # The listener protocol.

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> bool | Response | Request:
        raw_path = path.partition("?")[0]
        if raw_path.startswith(PREFIX):
            return self._own_url(method, raw_path, data)
        params = action_params(path, data, headers)
        action = params.get("Action")
        if action == "ConfirmSubscription":
            return self._confirm(params)
        if action == "Subscribe" and params.get("Protocol") in ("http", "https"):
            proxy_url = self._proxy_url or f"http://{headers.get('Host', 'localhost')}"
            return _with_delivery_url(proxy_url, path, params, headers)
        if action in ("Publish", "PublishBatch"):
            self._track_publish(params, add=True)
        if action == "Unsubscribe" and "Authorization" not in headers:
            return self._unsubscribe_url(method, path, data, params)
        return True

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Response | None:
        params = action_params(path, data, headers)
        action = params.get("Action")
        if action in ("Publish", "PublishBatch"):
            self._track_publish(params, add=False)
            return None
        if action not in _WATCHED or response.status_code != 200:
            return None
        body = response.content
        if action == "Subscribe":
            body = self._subscribed(params, headers, body)
        elif action in ("CreateTopic", "SetTopicAttributes"):
            self._topic_attributes(action, params, body)
        elif action == "SetSubscriptionAttributes":
            self._subscription_attribute(params)
        elif action == "Unsubscribe":
            with self._lock:
                self._subscriptions.pop(params.get("SubscriptionArn", ""), None)
        elif action == "GetSubscriptionAttributes":
            body = self._pending_attribute(params, body)
        elif action in ("ListSubscriptions", "ListSubscriptionsByTopic"):
            body = self._pending_arns(body)
        if DELIVER_PREFIX.encode() in body:
            body = restore_endpoints(body)
        response.body = body
        response.headers["Content-Length"] = str(len(body))
        return response

    # The proxy's own URLs.

    def _own_url(self, method: str, raw_path: str, data: Body) -> Response:
        if raw_path.startswith(DELIVER_PREFIX) and method == "POST":
            return self._handed_over(raw_path[len(DELIVER_PREFIX) :], data)
        signer = self._signer
        if method == "GET" and signer and raw_path == PREFIX + signer.name:
            headers = Headers(
                {
                    "Content-Type": "application/x-pem-file",
                    "Content-Length": str(len(signer.pem)),
                }
            )
            return Response(200, headers, signer.pem)
        return error_response(QUERY, 404, "NotFound", f"no such SNS URL: {raw_path}")

    def _handed_over(self, segment: str, data: Body) -> Response:
        """moto's notification for one subscription: deliver it if confirmed."""
        try:
            endpoint = decode_endpoint(segment)
            notification = json.loads(data if isinstance(data, bytes) else b"")
        except ValueError:
            return error_response(QUERY, 400, "InvalidParameter", "bad delivery URL")
        topic_arn = notification.get("TopicArn", "")
        with self._lock:
            found = [
                s
                for s in self._subscriptions.values()
                if s.topic_arn == topic_arn and s.endpoint == endpoint
            ]
        if not found:
            log.warning(
                "SNS message for %s on %s dropped: this proxy did not see the "
                "subscription (subscribe again after a restart)",
                endpoint,
                topic_arn,
            )
        elif not found[0].confirmed:
            log.info("SNS message for %s dropped: not confirmed yet", endpoint)
        else:
            key = (topic_arn, notification.get("Message", ""))
            with self._lock:
                attributes = (self._in_flight.get(key) or [{}])[0]
            self._notify(found[0], notification, attributes)
        return Response(200, Headers({"Content-Length": "0"}), b"")

    def _unsubscribe_url(
        self, method: str, path: str, data: Body, params: Mapping[str, str]
    ) -> Request:
        """A visit of an UnsubscribeURL, signed as the subscriber: the backend
        (moto) tells services apart by the credential scope."""
        arn = params.get("SubscriptionArn", "")
        with self._lock:
            subscription = self._subscriptions.get(arn)
        access_key = subscription.access_key if subscription else DEFAULT_ACCESS_KEY
        region = arn.split(":")[3] if arn.count(":") >= 5 else DEFAULT_REGION
        body = data if isinstance(data, bytes) else b""
        return backend_request(Caller(access_key, region), "sns", method, path, body)

    def _track_publish(self, params: Mapping[str, str], add: bool) -> None:
        topic_arn = params.get("TopicArn") or params.get("TargetArn") or ""
        with self._lock:
            for text, attributes in published(params):
                key = (topic_arn, text)
                if add:
                    self._in_flight.setdefault(key, []).append(attributes)
                elif key in self._in_flight:
                    self._in_flight[key].pop()
                    if not self._in_flight[key]:
                        del self._in_flight[key]

    def _confirm(self, params: Mapping[str, str]) -> Response:
        token = params.get("Token", "")
        with self._lock:
            subscription = self._subscriptions.get(self._tokens.get(token, ""))
            valid = subscription is not None and (
                subscription.topic_arn == params.get("TopicArn")
            )
            if subscription is not None and valid:
                subscription.confirmed = True
        if subscription is None or not valid:
            return error_response(
                QUERY, 400, "InvalidParameter", "Invalid token for this topic"
            )
        body = (
            f'<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/'
            f'{SNS_VERSION}/"><ConfirmSubscriptionResult><SubscriptionArn>'
            f"{escape(subscription.arn)}</SubscriptionArn></ConfirmSubscriptionResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
            "</ResponseMetadata></ConfirmSubscriptionResponse>"
        ).encode()
        headers = Headers(
            {"Content-Type": "text/xml", "Content-Length": str(len(body))}
        )
        return Response(200, headers, body)

    # Keeping track of subscriptions and topics.

    def _subscribed(
        self, params: Mapping[str, str], headers: Headers, body: bytes
    ) -> bytes:
        match = _ARN.search(body)
        if match is None:
            return body
        arn = match.group(1).decode()
        endpoint = decode_endpoint(params["Endpoint"].rpartition("/")[2])
        raw = entry_attributes(params, "Attributes").get("RawMessageDelivery", "")
        host = headers.get("Host", "localhost")
        with self._lock:
            subscription = self._subscriptions.get(arn)
            if subscription is None:
                subscription = Subscription(
                    arn,
                    params["TopicArn"],
                    endpoint,
                    f"http://{host}",
                    caller(headers).access_key,
                )
                subscription.raw = raw.lower() == "true"
                self._subscriptions[arn] = subscription
            confirmed = subscription.confirmed
            if not confirmed:
                token = secrets.token_hex(64)
                subscription.tokens.add(token)
                self._tokens[token] = arn
        if confirmed:
            return body
        self._send_confirmation(subscription, token)
        if params.get("ReturnSubscriptionArn", "").lower() == "true":
            return body
        return _ARN.sub(f"<SubscriptionArn>{PENDING}</SubscriptionArn>".encode(), body)

    def _topic_attributes(
        self, action: str, params: Mapping[str, str], body: bytes
    ) -> None:
        if action == "CreateTopic":
            version = entry_attributes(params, "Attributes").get("SignatureVersion")
            match = re.search(rb"<TopicArn>([^<]*)</TopicArn>", body)
            topic_arn = match.group(1).decode() if match else ""
        elif params.get("AttributeName") == "SignatureVersion":
            version = params.get("AttributeValue")
            topic_arn = params.get("TopicArn", "")
        else:
            return
        if version and topic_arn:
            with self._lock:
                self._signature_versions[topic_arn] = version

    def _subscription_attribute(self, params: Mapping[str, str]) -> None:
        if params.get("AttributeName") != "RawMessageDelivery":
            return
        with self._lock:
            subscription = self._subscriptions.get(params.get("SubscriptionArn", ""))
            if subscription is not None:
                subscription.raw = params.get("AttributeValue", "").lower() == "true"

    def _pending_attribute(self, params: Mapping[str, str], body: bytes) -> bytes:
        with self._lock:
            subscription = self._subscriptions.get(params.get("SubscriptionArn", ""))
            pending = subscription is not None and not subscription.confirmed
        return _PENDING_ATTRIBUTE.sub(rb"\1true\2", body) if pending else body

    def _pending_arns(self, body: bytes) -> bytes:
        """SNS lists a pending subscription as `PendingConfirmation`."""
        with self._lock:
            pending = {
                arn.encode()
                for arn, subscription in self._subscriptions.items()
                if not subscription.confirmed
            }
        if not pending:
            return body

        def listed(match: re.Match[bytes]) -> bytes:
            if match.group(1) in pending:
                return b"<SubscriptionArn>PendingConfirmation</SubscriptionArn>"
            return match.group(0)

        return _ARN.sub(listed, body)

    # Messages.

    def _send_confirmation(self, subscription: Subscription, token: str) -> None:
        query = urlencode(
            {
                "Action": "ConfirmSubscription",
                "TopicArn": subscription.topic_arn,
                "Token": token,
                "Version": SNS_VERSION,
            }
        )
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": subscription.topic_arn,
            "Message": (
                "You have chosen to subscribe to the topic "
                f"{subscription.topic_arn}.\nTo confirm the subscription, visit "
                "the SubscribeURL included in this message."
            ),
            "SubscribeURL": f"{subscription.base_url}/?{query}",
            "Timestamp": timestamp(),
        }
        self._send(subscription, message, "SubscriptionConfirmation")

    def _notify(
        self,
        subscription: Subscription,
        handed: Mapping[str, str],
        attributes: dict[str, Any],
    ) -> None:
        message = {
            "Type": "Notification",
            "MessageId": handed.get("MessageId") or str(uuid.uuid4()),
            "TopicArn": subscription.topic_arn,
        }
        if handed.get("Subject"):
            message["Subject"] = handed["Subject"]
        message["Message"] = handed.get("Message", "")
        message["Timestamp"] = handed.get("Timestamp") or timestamp()
        query = urlencode(
            {
                "Action": "Unsubscribe",
                "SubscriptionArn": subscription.arn,
                "Version": SNS_VERSION,
            }
        )
        unsubscribe = f"{subscription.base_url}/?{query}"
        self._send(subscription, message, "Notification", unsubscribe, attributes)

    def _send(
        self,
        subscription: Subscription,
        message: dict[str, str],
        kind: str,
        unsubscribe_url: str = "",
        attributes: dict[str, Any] | None = None,
    ) -> None:
        signer, deliverer = self._signer, self._deliverer
        if signer is None or deliverer is None:
            log.warning("SNS %s not sent: the listener was not started", kind)
            return
        with self._lock:
            version = self._signature_versions.get(subscription.topic_arn, "1")
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": USER_AGENT,
            "x-amz-sns-message-type": kind,
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": subscription.topic_arn,
        }
        if kind == "Notification":
            headers["x-amz-sns-subscription-arn"] = subscription.arn
        if kind == "Notification" and subscription.raw:
            headers["x-amz-sns-rawdelivery"] = "true"
            body = message["Message"].encode()
        else:
            message["SignatureVersion"] = version
            message["Signature"] = sign(message, signer.key, version)
            message["SigningCertURL"] = (
                f"{subscription.base_url}{PREFIX}{quote(signer.name)}"
            )
            if unsubscribe_url:
                message["UnsubscribeURL"] = unsubscribe_url
            document: dict[str, Any] = dict(message)
            if attributes:
                document["MessageAttributes"] = attributes
            body = json.dumps(document, indent=2).encode()
        deliverer.put(Delivery(subscription.endpoint, headers, body, kind))


_WATCHED = frozenset(
    {
        "Subscribe",
        "CreateTopic",
        "SetTopicAttributes",
        "SetSubscriptionAttributes",
        "Unsubscribe",
        "GetSubscriptionAttributes",
        "ListSubscriptions",
        "ListSubscriptionsByTopic",
    }
)


def _with_delivery_url(
    proxy_url: str, path: str, params: dict[str, str], headers: Headers
) -> Request:
    """The Subscribe call with the endpoint replaced by the proxy's delivery
    URL for it, as a form body."""
    params = dict(params)
    params["Endpoint"] = (
        f"{proxy_url}{DELIVER_PREFIX}{encode_endpoint(params['Endpoint'])}"
    )
    body = urlencode(params).encode()
    new_headers = Headers(headers)
    new_headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
    new_headers["Content-Length"] = str(len(body))
    return Request("POST", path.partition("?")[0] or "/", body, new_headers)
