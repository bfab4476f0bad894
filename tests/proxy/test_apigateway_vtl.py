"""The VTL evaluator and the API Gateway template variables, without sockets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from proxy.listeners.apigateway.errors import TemplateFailed
from proxy.listeners.apigateway.templates import (
    JsonPathError,
    MethodRequest,
    json_path,
    render,
)
from proxy.listeners.apigateway.vtl import VtlError, VtlSyntaxError
from proxy.listeners.apigateway.vtl import render as vtl

VARIABLES: dict[str, Any] = {
    "name": "ada",
    "n": 3,
    "flag": True,
    "off": False,
    "items": [1, 2, 3],
    "user": {"name": "Ann", "tags": ["a", "b"]},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("$name ${name}s $!name", "ada adas ada"),
        ("[$missing] [$!missing] [${missing}]", "[] [] []"),
        ("$user.name $user.tags[1] $items[-1]", "Ann b 3"),
        ("$user.tags.size() $user.get('name') $name.toUpperCase()", "2 Ann ADA"),
        ("$flag $off $user $items", "true false {name=Ann, tags=[a, b]} [1, 2, 3]"),
        ("cost: $5 and #hash and $ alone", "cost: $5 and #hash and $ alone"),
        ("\\$name \\#if", "$name #if"),
        ("#set($x = 2)$x", "2"),
        ("#set($x = $n * 2 + 1)$x #set($y = 7 / 2)$y #set($z = 7 % 4)$z", "7 3 3"),
        ("#set($s = 'a' + $n)$s", "a3"),
        ('#set($s = "hi $name")$s', "hi ada"),
        ("#set($s = 'hi $name')$s", "hi $name"),
        ("#set($m = {'k': [1, true, null], \"j\": 2.5})$m.k[1] $m.j", "true 2.5"),
        ("#set($user.name = 'Bo')$user.name", "Bo"),
        ("#set($l = [])#set($ok = $l.add(4))$l $ok", "[4] true"),
        ("#foreach($i in [1..4])$i#end", "1234"),
        ("#foreach($i in $items)$i#if($foreach.hasNext),#end#end", "1,2,3"),
        ("#foreach($i in $items)$foreach.index$velocityCount #end", "01 12 23 "),
        ("#foreach($i in $items)#if($i == 2)#break#end$i#end", "1"),
        ("#foreach($k in $user.keySet())$k;#end", "name;tags;"),
        ("#if($flag)yes#end", "yes"),
        ("#if($off)yes#else no#end", " no"),
        ("#if($n > 5)big#elseif($n >= 3)mid#{else}small#end", "mid"),
        ("#if($flag && !$off || $missing)a#end", "a"),
        ("#if($name == 'ada' and $n != 4)b#end", "b"),
        ("#if($n eq 3 && $n lt 4 && !($n gt 3))c#end", "c"),
        ("#if($n == '3')loose#end", "loose"),
        ("#if($missing)x#{else}y#end", "y"),
        ("a ## a comment\nb", "a b"),
        ("a #* block\ncomment *#b", "a b"),
        ("$name.replaceAll('(a)', '[$1]') $name.substring(1)", "[a]d[a] da"),
        ("$name.split('d') $name.contains('d') $name.length()", "[a, a] true 3"),
    ],
)
def test_vtl_renders(template: str, expected: str) -> None:
    assert vtl(template, VARIABLES) == expected


def test_lines_holding_only_directives_leave_no_trace() -> None:
    template = (
        "{\n"
        "  #set($first = true)\n"
        "  #foreach($i in $items)\n"
        '  "n$i": $i#if($foreach.hasNext),#end\n'
        "  #end\n"
        "  ## a note\n"
        "  #if($flag)\n"
        '    "flag": $flag\n'
        "  #end\n"
        "}"
    )

    assert vtl(template, VARIABLES) == (
        '{\n  "n1": 1,\n  "n2": 2,\n  "n3": 3\n    "flag": true\n}'
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("#if($flag)open", "line 1, column 11: #if has no #end"),
        ("ok\n#end", "line 2, column 5: #end without a matching #if"),
        ("#set($x = )", "unexpected ')'"),
        ("#set($x = 'open)", "the string has no closing quote"),
        ("${name", "${ has no closing }"),
        ("#foreach($i of $items)#end", "'in' after its variable"),
    ],
    ids=["no-end", "stray-end", "empty-value", "open-string", "open-brace", "no-in"],
)
def test_syntax_errors_name_the_place(template: str, message: str) -> None:
    with pytest.raises(VtlSyntaxError, match=re.escape(message)):
        vtl(template, VARIABLES)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("$name.nothing()", "string has no method nothing()"),
        ("#set($x = $n / 0)", "division by zero"),
        ("#set($x = $name - 1)", "string 'ada' is not a number"),
        ("#if($user < 1)#end", "cannot compare map and number"),
        ("$name.charAt(10)", "charAt\\(\\) failed: IndexError"),
    ],
)
def test_evaluation_errors_say_what_failed(template: str, message: str) -> None:
    with pytest.raises(VtlError, match=message):
        vtl(template, VARIABLES)


def test_templates_cannot_reach_private_attributes() -> None:
    assert vtl("[$name.__class__]", VARIABLES) == "[]"
    with pytest.raises(VtlError, match="has no method"):
        vtl("$util.__init__()", {"util": object()})


DOCUMENT = {"a": {"b": [1, 2, {"c": "x"}]}, "list": [{"k": 1}, {"k": 2}]}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$", DOCUMENT),
        ("$.a.b[0]", 1),
        ("$['a'].b[-1].c", "x"),
        ("$.list[*].k", [1, 2]),
        ("$.missing.deeper", None),
        ("$.a.b[9]", None),
    ],
)
def test_json_path(expression: str, expected: Any) -> None:
    assert json_path(DOCUMENT, expression) == expected


def test_json_path_refuses_what_it_cannot_read() -> None:
    with pytest.raises(JsonPathError, match="does not start with"):
        json_path(DOCUMENT, "a.b")
    with pytest.raises(JsonPathError, match="cannot read from"):
        json_path(DOCUMENT, "$..a")


REQUEST = MethodRequest(
    body='{"name": "Ann \\"A\\"", "n": 2, "ok": true, "tags": ["x"]}',
    path={"id": "7"},
    querystring={"q": "search", "id": "not-this"},
    header={"X-Trace": "t-1"},
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$input.body", REQUEST.body),
        ("$input.json('$.tags')", '["x"]'),
        (
            "$input.path('$.n') $input.path('$.ok') $input.path('$.tags').size()",
            "2 true 1",
        ),
        (
            "$input.params('id') $input.params('q') $input.params('x-trace')",
            "7 search t-1",
        ),
        ("[$input.params('none')]", "[]"),
        ("$input.params().path.id $input.params().header.get('X-Trace')", "7 t-1"),
        ("\"$util.escapeJavaScript($input.path('$.name'))\"", '"Ann \\"A\\""'),
        ('$util.escapeJavaScript("it\'s")', "it\\'s"),
        ("$util.parseJson('{\"a\": [5]}').a[0]", "5"),
        ("$util.urlEncode('a b&c=d') $util.urlDecode('a+b%26c')", "a+b%26c%3Dd a b&c"),
        ("$util.base64Encode('hi') $util.base64Decode('aGk=')", "aGk= hi"),
        ("$context.stage $context.identity.sourceIp", "dev 10.0.0.1"),
        ("$stageVariables.color $stageVariables.none", "blue "),
    ],
)
def test_api_gateway_variables(template: str, expected: str) -> None:
    context = {"stage": "dev", "identity": {"sourceIp": "10.0.0.1"}}

    assert render(template, REQUEST, context, {"color": "blue"}) == expected


def test_a_body_that_is_not_json_reads_as_nothing() -> None:
    request = MethodRequest(body="not json")

    assert render("[$input.path('$.a')] $input.json('$')", request, {}, {}) == (
        "[] null"
    )


def test_template_failures_become_invocation_errors() -> None:
    with pytest.raises(TemplateFailed, match="does not parse: line 1"):
        render("#if(", REQUEST, {}, {})
    with pytest.raises(TemplateFailed, match="parseJson\\(\\) failed"):
        render("$util.parseJson('{')", REQUEST, {}, {})
