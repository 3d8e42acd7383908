"""A reader for libconfig, the syntax of SWUpdate's ``sw-description`` (https://hyperrealm.github.io/libconfig/).

Settings are ``name = value;`` or ``name : value;`` (the terminator may be ``;``, ``,`` or nothing); values are
groups ``{ ... }`` (dicts), lists ``( ... )`` and arrays ``[ ... ]`` (lists), strings (adjacent strings join),
integers (decimal, hex, with an optional ``L``), floats and booleans. Comments: ``#``, ``//`` and ``/* */``.
Errors name the line.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<comment>(?:\#|//)[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<float>[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\d+[eE][-+]?\d+)
  | (?P<hex>0[xX][0-9a-fA-F]+L{0,2})
  | (?P<int>[-+]?\d+L{0,2})
  | (?P<bool>(?i:true|false)\b)
  | (?P<name>[A-Za-z*][-A-Za-z0-9_*@.]*)
  | (?P<punct>[=:;,{}()\[\]])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", '"': '"', "\\": "\\"}


class LibconfigError(ValueError):
    """Text that is not libconfig; the message names the line."""


def _unescape(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        if s.startswith("x"):
            return chr(int(s[1:], 16))
        return _ESCAPES.get(s, s)

    return re.sub(r"\\(x[0-9a-fA-F]{2}|.)", one, body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise LibconfigError(f"line {line}: unexpected {text[pos : pos + 20]!r}")
            kind = m.lastgroup or ""
            if kind not in ("space", "comment"):
                self.tokens.append((kind, m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.i = 0
        self.last_line = line

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", self.last_line)

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if value is not None and token[1] != value:
            raise LibconfigError(f"line {token[2]}: expected {value!r}, found {token[1] or 'the end'!r}")
        if token[0] == "end":
            raise LibconfigError(f"line {token[2]}: unexpected end of text")
        self.i += 1
        return token

    def settings(self, closing: str | None) -> dict[str, Any]:
        group: dict[str, Any] = {}
        while True:
            kind, value, line = self.peek()
            if (closing is None and kind == "end") or value == closing:
                return group
            if kind != "name":
                raise LibconfigError(f"line {line}: expected a setting name, found {value or 'the end'!r}")
            self.take()
            sep = self.take()
            if sep[1] not in ("=", ":"):
                raise LibconfigError(f"line {sep[2]}: expected '=' or ':' after {value!r}, found {sep[1]!r}")
            if value in group:
                raise LibconfigError(f"line {line}: setting {value!r} given twice")
            group[value] = self.value()
            if self.peek()[1] in (";", ","):
                self.take()

    def sequence(self, closing: str) -> list[Any]:
        items: list[Any] = []
        while self.peek()[1] != closing:
            items.append(self.value())
            if self.peek()[1] == ",":
                self.take()
            elif self.peek()[1] != closing:
                kind, value, line = self.peek()
                raise LibconfigError(f"line {line}: expected ',' or {closing!r}, found {value or 'the end'!r}")
        self.take(closing)
        return items

    def value(self) -> Any:
        kind, value, line = self.take()
        if value == "{":
            group = self.settings("}")
            self.take("}")
            return group
        if value == "(":
            return self.sequence(")")
        if value == "[":
            return self.sequence("]")
        if kind == "string":
            parts = [_unescape(value[1:-1])]
            while self.peek()[0] == "string":
                parts.append(_unescape(self.take()[1][1:-1]))
            return "".join(parts)
        if kind == "hex":
            return int(value.rstrip("L"), 16)
        if kind == "int":
            return int(value.rstrip("L"))
        if kind == "float":
            return float(value)
        if kind == "bool":
            return value.lower() == "true"
        raise LibconfigError(f"line {line}: expected a value, found {value!r}")


def loads(text: str) -> dict[str, Any]:
    """The settings of a libconfig text, as dicts (groups), lists (lists and arrays) and scalars."""
    parser = _Parser(text)
    return parser.settings(None)
