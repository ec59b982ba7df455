"""Parse the nats-server configuration format, enough to inspect rendered TickMesh configs.

Supported: `#` and `//` comments; `key: value`, `key = value`, `key value` and `key { ... }`;
maps `{ ... }` and arrays `[ ... ]` whose items are separated by commas, semicolons or new
lines; double- and single-quoted strings; bare words (numbers, sizes such as 150GB, booleans,
`$VARIABLE` references), kept as strings except for true/false and plain integers.
"""

from __future__ import annotations

import re
from typing import Any


class ConfError(Exception):
    pass


_BARE = re.compile(r"[^\s,;\[\]{}#=:\"']+")


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def error(self, msg: str) -> ConfError:
        line = self.s.count("\n", 0, self.i) + 1
        return ConfError(f"line {line}: {msg}")

    def skip(self, newlines: bool = True) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "#" or self.s.startswith("//", self.i):
                nl = self.s.find("\n", self.i)
                self.i = len(self.s) if nl < 0 else nl
            elif c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            else:
                return

    def peek(self) -> str:
        """The next character, or "\0" at the end (never "", which `in` would match)."""
        return self.s[self.i] if self.i < len(self.s) else "\0"

    def parse_body(self, closing: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            self.skip()
            c = self.peek()
            if c in ",;":
                self.i += 1
                continue
            if c == "\0":
                if closing:
                    raise self.error(f"missing {closing!r}")
                return out
            if closing and c == closing:
                self.i += 1
                return out
            key = self.parse_key()
            self.skip(newlines=False)
            if self.peek() in ":=":
                self.i += 1
                self.skip(newlines=False)
            if self.peek() in ("\0", "\n"):
                raise self.error(f"key {key!r} has no value")
            if key in out:
                raise self.error(f"duplicate key {key!r}")
            out[key] = self.parse_value()

    def parse_key(self) -> str:
        c = self.peek()
        if c in "\"'":
            return self.parse_string()
        m = _BARE.match(self.s, self.i)
        if not m:
            raise self.error(f"expected a key, found {c!r}")
        self.i = m.end()
        return m.group(0)

    def parse_string(self) -> str:
        quote = self.peek()
        self.i += 1
        buf = []
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\" and quote == '"':
                buf.append(self.s[self.i + 1])
                self.i += 2
                continue
            if c == quote:
                self.i += 1
                return "".join(buf)
            if c == "\n":
                break
            buf.append(c)
            self.i += 1
        raise self.error("unterminated string")

    def parse_value(self) -> Any:
        c = self.peek()
        if c == "{":
            self.i += 1
            return self.parse_body("}")
        if c == "[":
            self.i += 1
            return self.parse_array()
        if c in "\"'":
            return self.parse_string()
        m = _BARE.match(self.s, self.i)
        if not m:
            raise self.error(f"expected a value, found {c!r}")
        self.i = m.end()
        word = m.group(0)
        if word in ("true", "false"):
            return word == "true"
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        return word

    def parse_array(self) -> list[Any]:
        out = []
        while True:
            self.skip()
            c = self.peek()
            if c in ",;":
                self.i += 1
                continue
            if c == "\0":
                raise self.error("missing ']'")
            if c == "]":
                self.i += 1
                return out
            out.append(self.parse_value())


def parse(text: str) -> dict[str, Any]:
    return _Parser(text).parse_body(None)
