"""Render Terraform `templatefile` templates offline.

tfparse evaluates the variables a module passes to a template but not the template itself,
so the checks render it here. This covers the part of the template language the TickMesh
templates use, and refuses everything else loudly instead of guessing:

- interpolation `${ expr }`, with `~` strip markers on either side;
- directives `%{ for x in expr }`, `%{ for k, v in expr }`, `%{ endfor }`, `%{ if expr }`,
  `%{ else }`, `%{ endif }`;
- escapes `$${` and `%%{`;
- expressions: names, attribute and index access (`a.b`, `a["b"]`, `a[0]`), string and
  number literals, `true`/`false`/`null`, `!`, `==`, `!=`, `<`, `>`, `<=`, `>=`, `&&`, `||`,
  parentheses.

A reference to a name the variables do not hold, or to a value that is unknown (None), is
an error, as in Terraform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class TemplateError(Exception):
    pass


# --------------------------------------------------------------------------------------
# Lexing the template into literal text, interpolations and directives.
# --------------------------------------------------------------------------------------


@dataclass
class _Tok:
    kind: str  # "text", "interp", "directive"
    value: str
    strip_left: bool = False
    strip_right: bool = False


def _find_close(src: str, start: int) -> int:
    """Index of the `}` closing a `${`/`%{` sequence whose body starts at `start`."""
    depth = 0
    i = start
    in_str = False
    while i < len(src):
        c = src[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[(":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise TemplateError(f"unclosed template sequence starting at offset {start - 2}")


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    buf: list[str] = []
    i = 0
    while i < len(src):
        two = src[i : i + 2]
        three = src[i : i + 3]
        if three in ("$${", "%%{"):
            buf.append(three[1:])
            i += 3
            continue
        if two in ("${", "%{"):
            toks.append(_Tok("text", "".join(buf)))
            buf = []
            end = _find_close(src, i + 2)
            body = src[i + 2 : end]
            strip_left = body.startswith("~")
            strip_right = body.endswith("~")
            body = body[1 if strip_left else 0 : len(body) - 1 if strip_right else len(body)]
            kind = "interp" if two == "${" else "directive"
            toks.append(_Tok(kind, body.strip(), strip_left, strip_right))
            i = end + 1
            continue
        buf.append(src[i])
        i += 1
    toks.append(_Tok("text", "".join(buf)))
    # Apply strip markers to the neighbouring literal text. HCL splits literal text into
    # lines, and a marker trims only the adjacent line: `~}` removes the whitespace that
    # follows up to and including the next newline, `{~` the whitespace that precedes back
    # to (not including) the previous newline.
    for n, t in enumerate(toks):
        if t.kind == "text":
            continue
        if t.strip_left and n > 0 and toks[n - 1].kind == "text":
            text = toks[n - 1].value
            cut = text.rfind("\n") + 1
            toks[n - 1].value = text[:cut] + text[cut:].rstrip()
        if t.strip_right and n + 1 < len(toks) and toks[n + 1].kind == "text":
            text = toks[n + 1].value
            cut = text.find("\n") + 1 or len(text)
            toks[n + 1].value = text[:cut].lstrip() + text[cut:]
    return toks


# --------------------------------------------------------------------------------------
# Expressions.
# --------------------------------------------------------------------------------------

_EXPR_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?)
      | (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|&&|\|\||[!<>().\[\],])
      | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)


def _tokenize_expr(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _EXPR_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unsupported expression syntax in {text!r} at {text[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


_UNKNOWN = object()


class _ExprParser:
    def __init__(self, text: str, scope: dict[str, Any]):
        self.text = text
        self.toks = _tokenize_expr(text)
        self.pos = 0
        self.scope = scope

    def parse(self) -> Any:
        value = self._or()
        if self.pos != len(self.toks):
            raise TemplateError(f"unexpected {self.toks[self.pos][1]!r} in {self.text!r}")
        return value

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        tok = self._peek()
        if tok is None or (value is not None and tok[1] != value):
            raise TemplateError(f"expected {value or 'a value'} in {self.text!r}")
        self.pos += 1
        return tok

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == ("op", "||"):
            self._take()
            right = self._and()
            left = _truth(left, self.text) or _truth(right, self.text)
        return left

    def _and(self) -> Any:
        left = self._cmp()
        while self._peek() == ("op", "&&"):
            self._take()
            right = self._cmp()
            left = _truth(left, self.text) and _truth(right, self.text)
        return left

    def _cmp(self) -> Any:
        left = self._unary()
        tok = self._peek()
        if tok and tok[0] == "op" and tok[1] in ("==", "!=", "<", ">", "<=", ">="):
            self._take()
            right = self._unary()
            op = tok[1]
            if op == "==":
                return left == right
            if op == "!=":
                return left != right
            if not all(isinstance(v, (int, float)) for v in (left, right)):
                raise TemplateError(f"{op} needs numbers in {self.text!r}")
            return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
        return left

    def _unary(self) -> Any:
        if self._peek() == ("op", "!"):
            self._take()
            return not _truth(self._unary(), self.text)
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while True:
            tok = self._peek()
            if tok == ("op", "."):
                self._take()
                kind, name = self._take()
                if kind == "num":
                    value = _index(value, int(name), self.text)
                else:
                    value = _index(value, name, self.text)
            elif tok == ("op", "["):
                self._take()
                key = self._or()
                self._take("]")
                value = _index(value, key, self.text)
            else:
                return value

    def _primary(self) -> Any:
        kind, val = self._take()
        if kind == "num":
            return float(val) if "." in val else int(val)
        if kind == "str":
            if "${" in val or "%{" in val:
                raise TemplateError(f"nested templates are not supported: {self.text!r}")
            return bytes(val[1:-1], "utf-8").decode("unicode_escape")
        if kind == "op" and val == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind == "name":
            if self._peek() == ("op", "("):
                raise TemplateError(f"function calls are not supported: {self.text!r}")
            if val == "true":
                return True
            if val == "false":
                return False
            if val == "null":
                return None
            if val not in self.scope:
                raise TemplateError(f"template refers to {val!r}, which the variables do not define")
            return self.scope[val]
        raise TemplateError(f"unexpected {val!r} in {self.text!r}")


def _index(value: Any, key: Any, text: str) -> Any:
    try:
        return value[key]
    except (KeyError, IndexError, TypeError) as e:
        raise TemplateError(f"cannot index {key!r} in {text!r}: {e}") from None


def _truth(value: Any, text: str) -> bool:
    if not isinstance(value, bool):
        raise TemplateError(f"condition is not a bool in {text!r}: {value!r}")
    return value


def _stringify(value: Any, text: str) -> str:
    if value is None:
        raise TemplateError(f"${{{text}}} is null or unknown")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TemplateError(f"${{{text}}} is a {type(value).__name__}, not a string")


# --------------------------------------------------------------------------------------
# Directives into a tree, then evaluation.
# --------------------------------------------------------------------------------------


@dataclass
class _For:
    key_var: str | None
    value_var: str
    expr: str
    body: list = field(default_factory=list)


@dataclass
class _If:
    expr: str
    then: list = field(default_factory=list)
    orelse: list = field(default_factory=list)


_FOR = re.compile(r"^for\s+([A-Za-z_]\w*)(?:\s*,\s*([A-Za-z_]\w*))?\s+in\s+(.+)$", re.S)


def _build(toks: list[_Tok]) -> list:
    root: list = []
    stack: list[tuple[Any, list]] = [(None, root)]
    for t in toks:
        body = stack[-1][1]
        if t.kind == "text":
            if t.value:
                body.append(t.value)
        elif t.kind == "interp":
            body.append(("interp", t.value))
        else:
            d = t.value
            m = _FOR.match(d)
            if m:
                first, second, expr = m.groups()
                node = _For(first if second else None, second or first, expr)
                body.append(node)
                stack.append((node, node.body))
            elif d.startswith("if ") or d.startswith("if("):
                node = _If(d[2:].strip())
                body.append(node)
                stack.append((node, node.then))
            elif d == "else":
                node = stack[-1][0]
                if not isinstance(node, _If) or stack[-1][1] is node.orelse:
                    raise TemplateError("%{ else } without a matching %{ if }")
                stack[-1] = (node, node.orelse)
            elif d == "endif":
                if not isinstance(stack[-1][0], _If):
                    raise TemplateError("%{ endif } without a matching %{ if }")
                stack.pop()
            elif d == "endfor":
                if not isinstance(stack[-1][0], _For):
                    raise TemplateError("%{ endfor } without a matching %{ for }")
                stack.pop()
            else:
                raise TemplateError(f"unsupported directive %{{ {d} }}")
    if len(stack) != 1:
        kind = "for" if isinstance(stack[-1][0], _For) else "if"
        raise TemplateError(f"unterminated %{{ {kind} }} directive")
    return root


def _eval(nodes: list, scope: dict[str, Any], out: list[str]) -> None:
    for n in nodes:
        if isinstance(n, str):
            out.append(n)
        elif isinstance(n, tuple):
            out.append(_stringify(_ExprParser(n[1], scope).parse(), n[1]))
        elif isinstance(n, _For):
            coll = _ExprParser(n.expr, scope).parse()
            if isinstance(coll, dict):
                items = sorted(coll.items())  # Terraform iterates maps in key order
            elif isinstance(coll, (list, tuple)):
                items = list(enumerate(coll))
            else:
                raise TemplateError(f"cannot iterate over {n.expr!r}: {coll!r}")
            for k, v in items:
                inner = dict(scope)
                inner[n.value_var] = v
                if n.key_var:
                    inner[n.key_var] = k
                _eval(n.body, inner, out)
        elif isinstance(n, _If):
            cond = _truth(_ExprParser(n.expr, scope).parse(), n.expr)
            _eval(n.then if cond else n.orelse, scope, out)


def render(template: str, variables: dict[str, Any]) -> str:
    """Render `template` with `variables`, like Terraform's templatefile()."""
    tree = _build(_lex(template))
    out: list[str] = []
    _eval(tree, variables, out)
    return "".join(out)


def check_syntax(template: str) -> None:
    """Raise TemplateError when the template itself is malformed."""
    _build(_lex(template))
