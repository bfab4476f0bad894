"""The listener protocol through the running proxy: every return type, the
order of the chain, listeners that raise, and loading by entry points."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from werkzeug.datastructures import Headers

from proxy.errors import ListenerLoadError, ProxyError
from proxy.listener import (
    ListenerChain,
    ListenerContext,
    load_entry_points,
    load_factory,
    register,
)
from proxy.messages import Body, Request, Response
from tests.proxy.proxy_support import ProxyFactory, unique


class Scripted:
    """A listener that records its calls and returns what it was told to."""

    def __init__(
        self,
        name: str,
        calls: list[str] | None = None,
        forward: Any = True,
        reply: Any = None,
    ) -> None:
        self.name = name
        self.calls = calls if calls is not None else []
        self.forward = forward
        self.reply = reply

    def forward_request(
        self, method: str, path: str, data: Body, headers: Headers
    ) -> Any:
        self.calls.append(f"forward {self.name} {method} {path.partition('?')[0]}")
        if isinstance(self.forward, Exception):
            raise self.forward
        return (
            self.forward(method, path, data, headers)
            if callable(self.forward)
            else self.forward
        )

    def return_response(
        self, method: str, path: str, data: Body, headers: Headers, response: Response
    ) -> Any:
        self.calls.append(f"return {self.name} {response.status_code}")
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def test_true_forwards_and_both_hooks_see_the_call(make_proxy: ProxyFactory) -> None:
    listener = Scripted("a")
    proxy = make_proxy(register("a", listener))
    bucket = unique("forwarded")

    proxy.client("s3").create_bucket(Bucket=bucket)

    assert listener.calls == [f"forward a PUT /{bucket}", "return a 200"]
    assert bucket in [b["Name"] for b in proxy.client("s3").list_buckets()["Buckets"]]


def test_an_int_answers_with_that_status(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(register("teapot", Scripted("teapot", forward=418)))

    answer = requests.get(proxy.url + "/some-bucket/key", timeout=30)

    assert answer.status_code == 418
    assert answer.content == b""


def test_a_response_answers_instead_of_the_backend(make_proxy: ProxyFactory) -> None:
    canned = Response(200, Headers({"Content-Type": "text/plain"}), b"from listener")
    proxy = make_proxy(register("canned", Scripted("canned", forward=canned)))

    answer = requests.get(proxy.url + "/some-bucket/key", timeout=30)

    assert answer.status_code == 200
    assert answer.text == "from listener"


def test_a_request_is_forwarded_instead(make_proxy: ProxyFactory) -> None:
    def to_real(method: str, path: str, data: Body, headers: Headers) -> Any:
        return Request(method, path.replace("/alias", "/real"), data, headers)

    proxy = make_proxy(register("rewrite", Scripted("rewrite", forward=to_real)))
    s3 = proxy.client("s3")
    bucket = unique("rewritten")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="real", Body=b"the real object")

    body = s3.get_object(Bucket=bucket, Key="alias")["Body"].read()

    assert body == b"the real object"


def test_return_response_replaces_or_keeps(make_proxy: ProxyFactory) -> None:
    replaced = Response(202, Headers({"Content-Length": "8"}), b"replaced")
    inner = Scripted("inner", reply=None)
    outer = Scripted("outer", reply=replaced)
    proxy = make_proxy(
        register("outer", outer, order=1), register("inner", inner, order=2)
    )

    answer = requests.get(proxy.url + "/", timeout=30)

    assert (answer.status_code, answer.content) == (202, b"replaced")


class BackendBody:
    """A streamed backend body that records whether it was let go of."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Any:
        yield b"from the backend"

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("reply", "closed"),
    [
        (None, False),
        (Response(202, Headers(), b"replaced"), True),
        (RuntimeError("boom"), True),
        ("not a response", True),
    ],
    ids=["kept", "replaced", "raised", "invalid"],
)
def test_a_backend_body_that_will_not_be_sent_is_closed(
    reply: object, closed: bool
) -> None:
    # An unclosed streamed body would hold its backend connection until the
    # garbage collector found it.
    body = BackendBody()
    chain = [register("only", Scripted("only", reply=reply))]
    request = Request("GET", "/")

    with contextlib.suppress(ProxyError):
        ListenerChain(chain).respond(chain, 1, request, Response(200, body=body))

    assert body.closed is closed


@pytest.mark.parametrize(
    "result", ["yes", None, False, 99, 1.5], ids=["str", "none", "false", "99", "float"]
)
def test_anything_else_from_forward_request_is_a_503(
    make_proxy: ProxyFactory, result: object
) -> None:
    proxy = make_proxy(register("odd", Scripted("odd", forward=result)))

    answer = requests.get(proxy.url + "/some-bucket/key", timeout=30)

    assert answer.status_code == 503
    assert answer.headers["Content-Type"] == "application/xml"
    assert b"<Code>ServiceUnavailable</Code>" in answer.content
    assert b"listener odd returned" in answer.content


def test_the_error_shape_follows_the_service_protocol(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(register("odd", Scripted("odd", forward="yes")))

    with pytest.raises(ClientError) as raised:
        proxy.client("dynamodb").list_tables()

    assert raised.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


@pytest.mark.parametrize("hook", ["forward_request", "return_response"])
def test_a_raising_listener_is_a_500_and_the_proxy_keeps_serving(
    make_proxy: ProxyFactory, hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    boom = RuntimeError("secret detail")
    listener = (
        Scripted("boom", forward=boom)
        if hook == "forward_request"
        else Scripted("boom", reply=boom)
    )
    proxy = make_proxy(register("boom", listener, service="sqs"))

    with pytest.raises(ClientError) as raised:
        proxy.client("sqs").list_queues()
    answer = requests.get(proxy.url + "/", timeout=30)

    error = raised.value.response
    assert error["Error"]["Code"] == "InternalFailure"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "secret detail" not in json.dumps(error)
    assert "Traceback" not in json.dumps(error)
    assert answer.status_code == 200
    assert "listener boom raised in " + hook in caplog.text
    assert "RuntimeError: secret detail" in caplog.text


def test_the_chain_runs_in_order_and_returns_in_reverse(
    make_proxy: ProxyFactory,
) -> None:
    calls: list[str] = []
    proxy = make_proxy(
        register("global-2", Scripted("g2", calls), order=2),
        register("s3-1", Scripted("s3", calls), service="s3", order=1),
        register("sqs-3", Scripted("sqs", calls), service="sqs", order=3),
        register("global-2b", Scripted("g2b", calls), order=2),
    )

    requests.get(proxy.url + "/", timeout=30)
    s3_calls, calls[:] = list(calls), []
    proxy.client("sqs").list_queues()

    assert s3_calls == [
        "forward s3 GET /",
        "forward g2 GET /",
        "forward g2b GET /",
        "return g2b 200",
        "return g2 200",
        "return s3 200",
    ]
    assert calls == [
        "forward g2 POST /",
        "forward g2b POST /",
        "forward sqs POST /",
        "return sqs 200",
        "return g2b 200",
        "return g2 200",
    ]


def test_an_answer_stops_the_chain_and_only_those_that_ran_see_it(
    make_proxy: ProxyFactory,
) -> None:
    calls: list[str] = []
    proxy = make_proxy(
        register("first", Scripted("first", calls), order=1),
        register("answers", Scripted("answers", calls, forward=204), order=2),
        register("never", Scripted("never", calls), order=3),
    )

    answer = requests.delete(proxy.url + "/bucket/key", timeout=30)

    assert answer.status_code == 204
    assert calls == [
        "forward first DELETE /bucket/key",
        "forward answers DELETE /bucket/key",
        "return answers 204",
        "return first 204",
    ]


class Lifecycle(Scripted):
    """A listener with `start` and `stop`, which sends a request of its own."""

    def start(self, context: ListenerContext) -> None:
        answer = context.backend.send(Request("GET", "/", b"", Headers()))
        self.calls.append(f"start {context.url} {answer.status_code}")
        answer.content  # noqa: B018  (reads and releases the backend's body)

    def stop(self) -> None:
        self.calls.append("stop")


def test_listeners_start_with_a_context_and_stop(make_proxy: ProxyFactory) -> None:
    listener = Lifecycle("life")
    proxy = make_proxy(register("life", listener))
    started = list(listener.calls)

    proxy.server.stop()

    assert started == [f"start {proxy.url} 200"]
    assert listener.calls[-1] == "stop"


def test_listeners_load_from_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "extra_listener.py").write_text(
        textwrap.dedent(
            """
            class Extra:
                service = "sqs"
                order = 7

                def forward_request(self, method, path, data, headers):
                    return True

                def return_response(self, method, path, data, headers, response):
                    return None
            """
        )
    )
    info = tmp_path / "extra_listener-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-listener\n")
    (info / "entry_points.txt").write_text(
        "[proxy.listeners]\nextra = extra_listener:Extra\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    loaded = {r.name: r for r in load_entry_points()}

    assert (loaded["extra"].service, loaded["extra"].order) == ("sqs", 7)
    assert loaded["cors"].service is None
    sys.modules.pop("extra_listener", None)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_colon", "is not of the form module:attribute"),
        ("absent_module_xyz:F", "cannot load listener 'absent_module_xyz:F'"),
        ("json:dumps_absent", "cannot load listener 'json:dumps_absent'"),
        ("builtins:object", "has no forward_request and return_response"),
    ],
)
def test_a_listener_that_cannot_load_says_why(reference: str, message: str) -> None:
    with pytest.raises(ListenerLoadError, match=message):
        load_factory(reference)


def test_a_listener_that_cannot_start_stops_the_proxy_starting(
    make_proxy: ProxyFactory,
) -> None:
    class Broken(Scripted):
        def start(self, context: ListenerContext) -> None:
            raise RuntimeError("no configuration")

    with pytest.raises(
        ListenerLoadError, match="listener broken failed to start: no configuration"
    ):
        make_proxy(register("broken", Broken("broken")))
