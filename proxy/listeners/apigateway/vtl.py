"""A small Velocity (VTL) evaluator: the part of the language that API Gateway
mapping templates use. Pure: parsing and evaluation touch no I/O.

Supported: text; `$var`, `${var}`, `$!var` and `$!{var}` references with
properties (`$a.b`), method calls (`$a.b(1, 'x')`) and indexing (`$a[0]`);
`#set`, `#if`/`#elseif`/`#else`/`#end`, `#foreach`/`#end` (with `$foreach.index`,
`$foreach.count`, `$foreach.hasNext`, `$velocityCount`) and `#break`; `##` and
`#* *#` comments; string (`'...'` literal, `"..."` interpolated), number,
boolean, `null`, list, range (`[1..3]`) and map literals; arithmetic,
comparisons, `&&`, `||`, `!` and their word forms (`and`, `or`, `not`, `eq`...).

Values are Python values. Rendering follows Java, as API Gateway does:
`true`/`false`, maps as `{k=v}`, lists as `[a, b]`. A reference to nothing
renders as the empty string, the way API Gateway shows a missing field. Strings,
lists and maps answer the Java methods templates call on them (`size()`,
`get()`, `contains()`, `toUpperCase()`, `keySet()`...); other objects expose
their public attributes and methods.

A line that holds nothing but a directive leaves no trace in the output, so
that templates can be indented for reading without changing what they render.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn


class VtlError(Exception):
    """A template that does not parse, or fails while it is evaluated."""


class VtlSyntaxError(VtlError):
    """The template does not parse; the message names the line and column."""


# Expressions ------------------------------------------------------------------


class Expr:
    """A node that evaluates to a value."""

    def value(self, scope: Scope) -> Any:
        raise NotImplementedError


@dataclass
class Literal(Expr):
    constant: Any

    def value(self, scope: Scope) -> Any:
        return self.constant


@dataclass
class Interpolated(Expr):
    """A double-quoted string: a template of its own."""

    body: list[Node]

    def value(self, scope: Scope) -> Any:
        out: list[str] = []
        _run(self.body, scope, out)
        return "".join(out)


@dataclass
class ListExpr(Expr):
    items: list[Expr]

    def value(self, scope: Scope) -> Any:
        return [item.value(scope) for item in self.items]


@dataclass
class RangeExpr(Expr):
    start: Expr
    stop: Expr

    def value(self, scope: Scope) -> Any:
        first, last = _number(self.start.value(scope)), _number(self.stop.value(scope))
        step = 1 if last >= first else -1
        return list(range(int(first), int(last) + step, step))


@dataclass
class MapExpr(Expr):
    items: list[tuple[Expr, Expr]]

    def value(self, scope: Scope) -> Any:
        return {_text(k.value(scope)): v.value(scope) for k, v in self.items}


@dataclass
class Step:
    """One step of a reference: `.name`, `.name(args)` or `[index]`."""

    name: str | None = None
    args: list[Expr] | None = None
    index: Expr | None = None


@dataclass
class Reference(Expr):
    name: str
    steps: list[Step]

    def value(self, scope: Scope) -> Any:
        current = scope.get(self.name)
        for step in self.steps:
            if current is None:
                return None
            current = _step(current, step, scope)
        return current

    def assign(self, scope: Scope, new: Any) -> None:
        if not self.steps:
            scope.set(self.name, new)
            return
        holder = Reference(self.name, self.steps[:-1]).value(scope)
        last = self.steps[-1]
        if isinstance(holder, dict) and last.name is not None and last.args is None:
            holder[last.name] = new
        elif last.index is not None and isinstance(holder, dict | list):
            holder[last.index.value(scope)] = new
        else:
            raise VtlError(f"cannot #set a property of {_type_name(holder)}")


@dataclass
class Unary(Expr):
    operator: str
    operand: Expr

    def value(self, scope: Scope) -> Any:
        operand = self.operand.value(scope)
        if self.operator == "!":
            return not _truthy(operand)
        return -_number(operand)


@dataclass
class Binary(Expr):
    operator: str
    left: Expr
    right: Expr

    def value(self, scope: Scope) -> Any:
        if self.operator == "&&":
            return _truthy(self.left.value(scope)) and _truthy(self.right.value(scope))
        if self.operator == "||":
            return _truthy(self.left.value(scope)) or _truthy(self.right.value(scope))
        left, right = self.left.value(scope), self.right.value(scope)
        if self.operator in _COMPARISONS:
            return _compare(self.operator, left, right)
        return _arithmetic(self.operator, left, right)


_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_WORD_OPERATORS = {
    "and": "&&",
    "or": "||",
    "not": "!",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
}


def _truthy(value: Any) -> bool:
    return value is not None and value is not False


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VtlError(f"{_type_name(value)} {_text(value)!r} is not a number")
    return value


def _compare(operator: str, left: Any, right: Any) -> bool:
    both_numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right)
    )
    if operator in ("==", "!="):
        if both_numbers or type(left) is type(right) or None in (left, right):
            equal = bool(left == right)
        else:
            equal = _text(left) == _text(right)
        return equal if operator == "==" else not equal
    if not both_numbers and not (isinstance(left, str) and isinstance(right, str)):
        raise VtlError(
            f"cannot compare {_type_name(left)} and {_type_name(right)} with {operator}"
        )
    ordered: dict[str, bool] = {
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }
    return ordered[operator]


def _arithmetic(operator: str, left: Any, right: Any) -> Any:
    if operator == "+" and (isinstance(left, str) or isinstance(right, str)):
        return _text(left) + _text(right)
    a, b = _number(left), _number(right)
    if operator in ("/", "%") and b == 0:
        raise VtlError(f"division by zero in {_text(a)} {operator} {_text(b)}")
    if operator == "+":
        return a + b
    if operator == "-":
        return a - b
    if operator == "*":
        return a * b
    if operator == "/":
        if isinstance(a, int) and isinstance(b, int):
            return int(a / b)  # Java integer division truncates toward zero
        return a / b
    return a % b


# Properties and methods -------------------------------------------------------


def _java_split(text: str, pattern: str) -> list[str]:
    parts = re.split(pattern, text)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


_STRING_METHODS: dict[str, Callable[..., Any]] = {
    "length": len,
    "size": len,
    "isEmpty": lambda s: s == "",
    "toUpperCase": str.upper,
    "toLowerCase": str.lower,
    "trim": str.strip,
    "contains": lambda s, part: _text(part) in s,
    "startsWith": lambda s, part: s.startswith(_text(part)),
    "endsWith": lambda s, part: s.endswith(_text(part)),
    "indexOf": lambda s, part: s.find(_text(part)),
    "lastIndexOf": lambda s, part: s.rfind(_text(part)),
    "charAt": lambda s, i: s[i],
    "substring": lambda s, start, end=None: s[start:end],
    "replace": lambda s, old, new: s.replace(_text(old), _text(new)),
    "replaceAll": lambda s, pattern, new: re.sub(pattern, _java_replacement(new), s),
    "split": _java_split,
    "matches": lambda s, pattern: re.fullmatch(pattern, s) is not None,
    "equals": lambda s, other: s == other,
    "equalsIgnoreCase": lambda s, other: s.lower() == _text(other).lower(),
    "toString": lambda s: s,
}
_LIST_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "isEmpty": lambda items: not items,
    "get": lambda items, i: items[i],
    "contains": lambda items, item: item in items,
    "indexOf": lambda items, item: items.index(item) if item in items else -1,
    "add": lambda items, item: items.append(item) or True,
    "toString": lambda items: _text(items),
}
_MAP_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "isEmpty": lambda mapping: not mapping,
    "get": lambda mapping, key: mapping.get(key),
    "containsKey": lambda mapping, key: key in mapping,
    "keySet": lambda mapping: list(mapping.keys()),
    "values": lambda mapping: list(mapping.values()),
    "entrySet": lambda mapping: [{"key": k, "value": v} for k, v in mapping.items()],
    "put": lambda mapping, key, value: mapping.__setitem__(key, value),
    "putAll": lambda mapping, other: mapping.update(other),
    "remove": lambda mapping, key: mapping.pop(key, None),
    "toString": lambda mapping: _text(mapping),
}


def _java_replacement(replacement: Any) -> str:
    # Java writes group references as $1; Python as \1.
    return re.sub(r"\$(\d+)", r"\\\1", _text(replacement))


def _step(current: Any, step: Step, scope: Scope) -> Any:
    if step.index is not None:
        index = step.index.value(scope)
        try:
            return current[index]
        except (LookupError, TypeError):
            return None
    assert step.name is not None
    name = step.name
    if step.args is None:
        if isinstance(current, dict):
            return current.get(name)
        return _attribute(current, name)

    args = [arg.value(scope) for arg in step.args]
    table = _methods_of(current)
    if table is not None:
        method = table.get(name)
        if method is None:
            raise VtlError(f"{_type_name(current)} has no method {name}()")
        return _call(method, name, current, *args)
    attribute = _attribute(current, name)
    if not callable(attribute):
        raise VtlError(f"{_type_name(current)} has no method {name}()")
    return _call(attribute, name, *args)


def _methods_of(value: Any) -> dict[str, Callable[..., Any]] | None:
    if isinstance(value, str):
        return _STRING_METHODS
    if isinstance(value, list):
        return _LIST_METHODS
    if isinstance(value, dict):
        return _MAP_METHODS
    if isinstance(value, bool | int | float):
        return {"toString": _text}
    return None


def _attribute(value: Any, name: str) -> Any:
    if name.startswith("_") or _methods_of(value) is not None:
        return None
    return getattr(value, name, None)


def _call(method: Callable[..., Any], name: str, *args: Any) -> Any:
    try:
        return method(*args)
    except VtlError:
        raise
    except Exception as exc:
        raise VtlError(f"{name}() failed: {type(exc).__name__}: {exc}") from exc


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "list" if isinstance(value, list) else "map"
    )


def _text(value: Any) -> str:
    """`value` as Java's `String.valueOf` writes it."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_text(k)}={_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


# Statements -------------------------------------------------------------------


class Node:
    """A node of a template body."""

    def run(self, scope: Scope, out: list[str]) -> None:
        raise NotImplementedError


@dataclass
class Text(Node):
    text: str

    def run(self, scope: Scope, out: list[str]) -> None:
        out.append(self.text)


@dataclass
class Output(Node):
    reference: Reference
    silent: bool

    def run(self, scope: Scope, out: list[str]) -> None:
        out.append(_text(self.reference.value(scope)))


@dataclass
class SetNode(Node):
    target: Reference
    expression: Expr

    def run(self, scope: Scope, out: list[str]) -> None:
        self.target.assign(scope, self.expression.value(scope))


@dataclass
class IfNode(Node):
    branches: list[tuple[Expr, list[Node]]]
    otherwise: list[Node]

    def run(self, scope: Scope, out: list[str]) -> None:
        for condition, body in self.branches:
            if _truthy(condition.value(scope)):
                _run(body, scope, out)
                return
        _run(self.otherwise, scope, out)


class _Break(Exception):
    """`#break` leaves the innermost `#foreach`."""


@dataclass
class ForeachNode(Node):
    variable: str
    iterable: Expr
    body: list[Node]

    def run(self, scope: Scope, out: list[str]) -> None:
        items = self.iterable.value(scope)
        if isinstance(items, dict):
            items = list(items.values())
        if items is None:
            return
        if not isinstance(items, list):
            raise VtlError(f"#foreach cannot iterate over {_type_name(items)}")
        saved = {
            name: scope.get(name)
            for name in (self.variable, "foreach", "velocityCount")
        }
        try:
            for index, item in enumerate(items):
                scope.set(self.variable, item)
                scope.set(
                    "foreach",
                    {
                        "index": index,
                        "count": index + 1,
                        "hasNext": index + 1 < len(items),
                        "first": index == 0,
                        "last": index + 1 == len(items),
                    },
                )
                scope.set("velocityCount", index + 1)
                try:
                    _run(self.body, scope, out)
                except _Break:
                    break
        finally:
            for name, value in saved.items():
                scope.set(name, value)


class BreakNode(Node):
    def run(self, scope: Scope, out: list[str]) -> None:
        raise _Break


def _run(body: Sequence[Node], scope: Scope, out: list[str]) -> None:
    for node in body:
        node.run(scope, out)


class Scope:
    """The variables a template sees and sets."""

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self._variables = dict(variables)

    def get(self, name: str) -> Any:
        return self._variables.get(name)

    def set(self, name: str, value: Any) -> None:
        self._variables[name] = value


# Parsing ----------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIRECTIVE = re.compile(r"#(?:\{(\w+)\}|(\w+))")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s*")
_OPERATOR = re.compile(r"&&|\|\||==|!=|<=|>=|\.\.|[<>!+\-*/%(),\[\]{}:=]")
_ENDINGS = frozenset({"elseif", "else", "end"})
_KNOWN = frozenset({"set", "if", "elseif", "else", "end", "foreach", "break"})


@dataclass
class Header:
    """A directive's name and what stands in its parentheses."""

    name: str
    condition: Expr | None = None
    node: Node | None = None
    variable: str | None = None


class Parser:
    """Recursive descent over the template text."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.position = 0

    # Template level.

    def template(self) -> list[Node]:
        body, ending = self.body(frozenset())
        if ending is not None:
            self.fail(f"#{ending.name} without a matching #if or #foreach")
        return body

    def body(self, endings: frozenset[str]) -> tuple[list[Node], Header | None]:
        """Nodes up to one of the `endings` directives (consumed, and returned
        with its condition), or to the end of the text."""
        nodes: list[Node] = []
        text: list[str] = []
        source = self.source
        while self.position < len(source):
            char = source[self.position]
            if char == "#":
                if source.startswith("##", self.position):
                    self._skip_line_comment(text)
                    continue
                if source.startswith("#*", self.position):
                    self._skip_block_comment()
                    continue
                directive = _DIRECTIVE.match(source, self.position)
                name = directive and (directive.group(1) or directive.group(2))
                if directive and name in _KNOWN:
                    line_start = self._standalone_start()
                    self.position = directive.end()
                    header = self.header(name or "")
                    self._gobble_line(line_start, text)
                    if text:
                        nodes.append(Text("".join(text)))
                        text = []
                    if header.name in _ENDINGS:
                        if header.name not in endings:
                            self.fail(f"#{header.name} without a matching #if")
                        return nodes, header
                    nodes.append(self.block(header))
                    continue
            elif char == "$":
                reference = self.try_reference()
                if reference is not None:
                    if text:
                        nodes.append(Text("".join(text)))
                        text = []
                    nodes.append(reference)
                    continue
            elif char == "\\" and source.startswith(("\\$", "\\#"), self.position):
                text.append(source[self.position + 1])
                self.position += 2
                continue
            text.append(char)
            self.position += 1
        if text:
            nodes.append(Text("".join(text)))
        return nodes, None

    def header(self, name: str) -> Header:
        """The part of a directive on its own line: name and arguments."""
        if name in ("if", "elseif"):
            return Header(name, condition=self.condition())
        if name == "set":
            self.expect("(")
            target = self.reference_expression()
            self.expect("=")
            value = self.expression()
            self.expect(")")
            return Header(name, node=SetNode(target, value))
        if name == "foreach":
            self.expect("(")
            variable = self.reference_expression()
            if variable.steps:
                self.fail("#foreach needs a plain $variable before 'in'")
            self.skip_space()
            if not self.source.startswith("in", self.position):
                self.fail("#foreach needs 'in' after its variable")
            self.position += 2
            iterable = self.expression()
            self.expect(")")
            return Header(name, condition=iterable, variable=variable.name)
        if name == "break":
            return Header(name, node=BreakNode())
        return Header(name)

    def block(self, header: Header) -> Node:
        """The node a directive stands for, with its body when it has one."""
        if header.node is not None:
            return header.node
        assert header.condition is not None
        if header.name == "foreach":
            body, _ = self.require_body(frozenset({"end"}), "#foreach")
            return ForeachNode(header.variable or "", header.condition, body)

        branches: list[tuple[Expr, list[Node]]] = []
        otherwise: list[Node] = []
        condition = header.condition
        while True:
            body, ending = self.require_body(_ENDINGS, "#if")
            branches.append((condition, body))
            if ending.name == "elseif" and ending.condition is not None:
                condition = ending.condition
                continue
            if ending.name == "else":
                otherwise, _ = self.require_body(frozenset({"end"}), "#else")
            return IfNode(branches, otherwise)

    def condition(self) -> Expr:
        self.expect("(")
        condition = self.expression()
        self.expect(")")
        return condition

    def require_body(
        self, endings: frozenset[str], opened: str
    ) -> tuple[list[Node], Header]:
        start = self.position
        body, ending = self.body(endings)
        if ending is None:
            self.position = start
            self.fail(f"{opened} has no #end")
        return body, ending

    def _skip_line_comment(self, text: list[str]) -> None:
        end = self.source.find("\n", self.position)
        standalone = self._standalone_start() is not None
        # As in Velocity, the comment takes its line's newline with it.
        self.position = len(self.source) if end == -1 else end + 1
        if standalone:
            self._trim_indent(text)

    def _skip_block_comment(self) -> None:
        end = self.source.find("*#", self.position + 2)
        if end == -1:
            self.fail("#* comment has no closing *#")
        self.position = end + 2

    def _standalone_start(self) -> int | None:
        """Where the current line starts, when only spaces precede the cursor."""
        line_start = self.source.rfind("\n", 0, self.position) + 1
        before = self.source[line_start : self.position]
        return None if before.strip(" \t") else line_start

    def _gobble_line(self, line_start: int | None, text: list[str]) -> None:
        """Drop a directive's line when nothing else stands on it."""
        if line_start is None:
            return
        rest = _SPACE.match(self.source, self.position)
        end = rest.end() if rest else self.position
        after = self.source[self.position : end]
        if "\n" not in after and end != len(self.source):
            return
        newline = after.find("\n")
        self.position += len(after) if newline == -1 else newline + 1
        self._trim_indent(text)

    @staticmethod
    def _trim_indent(text: list[str]) -> None:
        joined = "".join(text)
        trimmed = joined.rstrip(" \t")
        text[:] = [trimmed] if trimmed else []

    # References.

    def try_reference(self) -> Output | None:
        """A `$` reference in text, or None when the `$` is literal text."""
        start = self.position
        match = re.compile(r"\$(!?)(\{?)").match(self.source, start)
        assert match is not None
        silent, braced = bool(match.group(1)), bool(match.group(2))
        name = _NAME.match(self.source, match.end())
        if name is None:
            return None
        self.position = name.end()
        steps = self.steps()
        if braced:
            if not self.source.startswith("}", self.position):
                self.fail("${ has no closing }")
            self.position += 1
        return Output(Reference(name.group(0), steps), silent)

    def steps(self) -> list[Step]:
        steps: list[Step] = []
        source = self.source
        while self.position < len(source):
            char = source[self.position]
            if char == ".":
                name = _NAME.match(source, self.position + 1)
                if name is None:
                    break
                self.position = name.end()
                args = None
                if source.startswith("(", self.position):
                    self.position += 1
                    args = self.arguments(")")
                steps.append(Step(name=name.group(0), args=args))
            elif char == "[":
                self.position += 1
                index = self.expression()
                self.expect("]")
                steps.append(Step(index=index))
            else:
                break
        return steps

    def arguments(self, closing: str) -> list[Expr]:
        args: list[Expr] = []
        self.skip_space()
        if self.source.startswith(closing, self.position):
            self.position += 1
            return args
        while True:
            args.append(self.expression())
            token = self.token()
            if token == closing:
                return args
            if token != ",":
                self.fail(f"expected ',' or '{closing}'")

    def reference_expression(self) -> Reference:
        self.skip_space()
        match = re.compile(r"\$!?\{?").match(self.source, self.position)
        if match is None:
            self.fail("expected a $reference")
        braced = match.group(0).endswith("{")
        self.position = match.end()
        name = _NAME.match(self.source, self.position)
        if name is None:
            self.fail("expected a name after $")
        self.position = name.end()
        steps = self.steps()
        if braced:
            self.expect("}")
        return Reference(name.group(0), steps)

    # Expressions, lowest precedence first.

    def expression(self) -> Expr:
        return self.binary(0)

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        ("==", "!="),
        ("<", "<=", ">", ">="),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Expr:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            operator = self.peek_operator()
            if operator not in self._LEVELS[level]:
                return left
            self.position = self._after_operator
            left = Binary(operator, left, self.binary(level + 1))

    def unary(self) -> Expr:
        operator = self.peek_operator()
        if operator in ("!", "-"):
            self.position = self._after_operator
            return Unary(operator, self.unary())
        return self.primary()

    _after_operator = 0

    def peek_operator(self) -> str | None:
        self.skip_space()
        word = _NAME.match(self.source, self.position)
        if word and word.group(0) in _WORD_OPERATORS:
            self._after_operator = word.end()
            return _WORD_OPERATORS[word.group(0)]
        match = _OPERATOR.match(self.source, self.position)
        if match is None:
            return None
        self._after_operator = match.end()
        return match.group(0)

    def primary(self) -> Expr:
        self.skip_space()
        source, start = self.source, self.position
        if start >= len(source):
            self.fail("the expression ends early")
        char = source[start]
        if char == "$":
            return self.reference_expression()
        if char in "'\"":
            return self.string(char)
        number = _NUMBER.match(source, start)
        if number:
            self.position = number.end()
            text = number.group(0)
            return Literal(float(text) if "." in text else int(text))
        word = _NAME.match(source, start)
        if word and word.group(0) in ("true", "false", "null"):
            self.position = word.end()
            return Literal({"true": True, "false": False, "null": None}[word.group(0)])
        if char == "(":
            self.position += 1
            inner = self.expression()
            self.expect(")")
            return inner
        if char == "[":
            return self.list_or_range()
        if char == "{":
            return self.map_literal()
        self.fail(f"unexpected {source[start : start + 10]!r}")

    def string(self, quote: str) -> Expr:
        start = self.position + 1
        position, parts = start, []
        while True:
            end = self.source.find(quote, position)
            if end == -1:
                self.position = start - 1
                self.fail("the string has no closing quote")
            parts.append(self.source[position:end])
            if self.source.startswith(quote * 2, end):
                parts.append(quote)  # a doubled quote stands for itself
                position = end + 2
                continue
            self.position = end + 1
            break
        text = "".join(parts)
        if quote == "'" or ("$" not in text and "#" not in text):
            return Literal(text)
        return Interpolated(Parser(text).template())

    def list_or_range(self) -> Expr:
        self.position += 1
        self.skip_space()
        if self.source.startswith("]", self.position):
            self.position += 1
            return ListExpr([])
        first = self.expression()
        if self.peek_operator() == "..":
            self.position = self._after_operator
            last = self.expression()
            self.expect("]")
            return RangeExpr(first, last)
        items = [first]
        while True:
            token = self.token()
            if token == "]":
                return ListExpr(items)
            if token != ",":
                self.fail("expected ',' or ']' in a list")
            items.append(self.expression())

    def map_literal(self) -> Expr:
        self.position += 1
        items: list[tuple[Expr, Expr]] = []
        self.skip_space()
        if self.source.startswith("}", self.position):
            self.position += 1
            return MapExpr(items)
        while True:
            key = self.expression()
            self.expect(":")
            items.append((key, self.expression()))
            token = self.token()
            if token == "}":
                return MapExpr(items)
            if token != ",":
                self.fail("expected ',' or '}' in a map")

    # Tokens.

    def skip_space(self) -> None:
        match = _SPACE.match(self.source, self.position)
        assert match is not None
        self.position = match.end()

    def token(self) -> str | None:
        operator = self.peek_operator()
        if operator is not None:
            self.position = self._after_operator
        return operator

    def expect(self, wanted: str) -> None:
        if self.token() != wanted:
            self.fail(f"expected {wanted!r}")

    def fail(self, problem: str) -> NoReturn:
        line = self.source.count("\n", 0, self.position) + 1
        column = self.position - self.source.rfind("\n", 0, self.position)
        raise VtlSyntaxError(f"line {line}, column {column}: {problem}")


def parse(source: str) -> list[Node]:
    """The template's nodes; raises VtlSyntaxError with the line and column."""
    return Parser(source).template()


def evaluate(template: Sequence[Node], variables: Mapping[str, Any]) -> str:
    """Render parsed `template` with `variables`; raises VtlError."""
    out: list[str] = []
    try:
        _run(template, Scope(variables), out)
    except RecursionError as exc:
        raise VtlError("the template nests too deeply") from exc
    return "".join(out)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Parse and render `source` in one go."""
    return evaluate(parse(source), variables)
