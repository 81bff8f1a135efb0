"""Token values and whole-message decoding for :mod:`qga.codec.lexer`.

The lexer in :mod:`qga.codec.lexer` cuts the input into tokens; this module
turns a balanced run of tokens into a value with QEMU's parser rules (first
error wins, duplicate keys, QEMU's string escapes and number ranges), and
holds the fast path: one regex recognising a small well-formed message that
the C ``json`` decoder then builds.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple, Union

from qga.codec.lazyre import LazyPattern
from qga.codec.tokens import COLON, COMMA, FLOAT, INT, KW, LC, LS, RC, RS, STR, OutOfRangeNumber
from qga.codec.utf8 import NONCHAR, qemu_lossy_decode, valid_codepoint

_HEX4 = LazyPattern(rb"[0-9a-fA-F]{4}")
_ESCAPES = {0x22: '"', 0x27: "'", 0x5C: "\\", 0x2F: "/", 0x62: "\b",
            0x66: "\f", 0x6E: "\n", 0x72: "\r", 0x74: "\t"}
# \u escapes the C decoder accepts but QEMU does not (surrogates, nonchars).
_BAD_ESC = LazyPattern(rb"\\u(?:[dD][89a-fA-F]|[fF][dD][dDeE]|[fF][fF][fF][eEfF])")

# --- fast path: a whole well-formed message of bounded depth -------------
_W = rb"[ \t\r\n]*"
_FSTR = rb'"[^"\\\x00-\x1f\xfe\xff]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f\xfe\xff]*)*"'
_FNUM = rb"-?(?:0(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?)?|[1-9][0-9]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
# Each member/element is followed by a comma that must lead to another one,
# or by the closing bracket, so the value pattern appears once per level (not
# twice as in "first (, next)*"): the pattern stays small and compiles in a few
# ms instead of >100 ms, which mattered for the agent's start-up.
_OBJ_NEXT = rb'(?:,' + _W + rb'(?=")|(?=\}))'
_ARR_NEXT = rb"(?:," + _W + rb"(?=[^\]])|(?=\]))"
_FVAL = rb"(?:" + _FSTR + rb"|" + _FNUM + rb"|true|false|null)"
for _ in range(3):
    _FVAL = (rb"(?:" + _FSTR + rb"|" + _FNUM + rb"|true|false|null"
             + rb"|\{" + _W + rb"(?:" + _FSTR + _W + rb":" + _W + _FVAL + _W + _OBJ_NEXT + rb")*\}"
             + rb"|\[" + _W + rb"(?:" + _FVAL + _W + _ARR_NEXT + rb")*\])")


# Compiling it takes several ms, a fifth of the agent's start-up: the agent
# defers it until its first reply has left (qga.agent).
FAST_MESSAGE = LazyPattern(
    _W + rb"(\{" + _W + rb"(?:" + _FSTR + _W + rb":" + _W + _FVAL + _W + _OBJ_NEXT + rb")*\})")
_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


class JsonParseError:
    """One error item: ``desc`` is the exact text qemu-ga puts in its reply."""

    __slots__ = ("desc",)

    def __init__(self, desc: str) -> None:
        self.desc = desc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonParseError) and other.desc == self.desc

    def __hash__(self) -> int:
        return hash(self.desc)

    def __repr__(self) -> str:
        return f"JsonParseError({self.desc!r})"


class ParseFailure(Exception):
    """The first parse error of a message (QEMU keeps only it); raised by :func:`parse_tokens`."""


class _Dup(Exception):
    """Internal: the fast path met a duplicate key."""


def _decode_chunk(raw: bytes) -> str:
    """Validate and decode unescaped string bytes (modified UTF-8)."""
    if raw.isascii():
        return raw.decode("ascii")
    try:
        # C0 80 can only ever be U+0000 here: raw NUL is a lexical error.
        text = raw.replace(b"\xc0\x80", b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise ParseFailure("invalid UTF-8 sequence in string") from None
    if NONCHAR.search(text):
        raise ParseFailure("invalid UTF-8 sequence in string")
    return text


def _hex4(tok: bytes, k: int) -> int:
    m = _HEX4.match(tok, k)
    return int(m.group(), 16) if m else -1


def _decode_string(tok: bytes) -> str:
    """parse_string(): decode a complete string token (quotes included)."""
    end = len(tok) - 1
    i = 1
    j = tok.find(b"\\", 1, end)
    if j < 0:
        return _decode_chunk(tok[1:end])
    tokz = tok + b"\0"  # C strings: readers stop at the terminator
    parts: list[str] = []
    while j >= 0:
        if j > i:
            parts.append(_decode_chunk(tok[i:j]))
        c = tok[j + 1]
        if c == 0x75:  # \uXXXX, maybe a surrogate pair
            cp = _hex4(tokz, j + 2)
            p = j + 6
            if 0xD800 <= cp <= 0xDBFF and tokz[p:p + 2] == b"\\u":
                cp = 0x10000 + ((cp & 0x3FF) << 10)
                trail = _hex4(tokz, p + 2)
                if 0xDC00 <= trail <= 0xDFFF:
                    cp |= trail & 0x3FF
                    p += 6
                else:
                    cp = -1
            if not valid_codepoint(cp):
                raise ParseFailure(qemu_lossy_decode(tokz[j:p])
                           + " is not a valid Unicode character")
            parts.append(chr(cp))
            i = p
        else:
            esc = _ESCAPES.get(c)
            if esc is None:
                raise ParseFailure("invalid escape sequence in string")
            parts.append(esc)
            i = j + 2
        j = tok.find(b"\\", i, end)
    if i < end:
        parts.append(_decode_chunk(tok[i:end]))
    return "".join(parts)


def _number(tok: bytes, integer: bool) -> Any:
    """QNum semantics: int64, else uint64 (non-negative), else double."""
    if integer and len(tok) < 19:
        return int(tok)
    if integer and len(tok) <= 20:
        v = int(tok)
        if _INT64_MIN <= v <= _UINT64_MAX:
            return v
    return _float_hook(tok.decode("ascii"))


def _float_hook(text: str) -> float:
    """A double, or, beyond the double range, the number that remembers its text."""
    v = float(text)
    return v if v - v == 0 else OutOfRangeNumber(text)


def parse_tokens(types: list[int], texts: list[Any]) -> Any:
    """json_parser_parse() without recursion: returns a value or raises ParseFailure."""
    n = len(types)
    i = 0
    # Frames: [is_dict, container, key, have_key]
    stack: list[list[Any]] = []
    while True:
        if i >= n:
            raise ParseFailure("premature EOI")
        t = types[i]
        if t in (LC, LS):
            if i + 1 >= n:
                raise ParseFailure("premature EOI")
            if types[i + 1] == t + 1:  # empty {} / []
                val: Any = {} if t == LC else []
                i += 2
            else:
                stack.append([t == LC, {} if t == LC else [], None, False])
                i += 1
                continue
        elif t == STR:
            text = texts[i]
            val = text if isinstance(text, str) else _decode_string(text)
            i += 1
        elif t in (INT, FLOAT):
            val = _number(texts[i], t == INT)
            i += 1
        elif t == KW:
            word = texts[i]
            if word == b"true":
                val = True
            elif word == b"false":
                val = False
            elif word == b"null":
                val = None
            else:  # vsnprintf into char[1024] truncates
                raise ParseFailure(("invalid keyword '" + word.decode("ascii") + "'")[:1023])
            i += 1
        else:
            raise ParseFailure("expecting value")
        # A value is complete: hand it to the enclosing containers.
        while True:
            if not stack:
                return val
            frame = stack[-1]
            if frame[0] and not frame[3]:          # it was a key
                if not isinstance(val, str):
                    raise ParseFailure("key is not a string in object")
                if i >= n:
                    raise ParseFailure("premature EOI")
                if types[i] != COLON:
                    raise ParseFailure("missing : in object pair")
                frame[2], frame[3] = val, True
                i += 1
                break
            if frame[0]:
                if frame[2] in frame[1]:
                    raise ParseFailure("duplicate key")
                frame[1][frame[2]] = val
                frame[3] = False
                close, what = RC, "dict"
            else:
                frame[1].append(val)
                close, what = RS, "list"
            if i >= n:
                raise ParseFailure("premature EOI")
            t = types[i]
            i += 1
            if t == close:
                val = stack.pop()[1]
                continue
            if t != COMMA:
                raise ParseFailure("expected separator in " + what)
            break


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _Dup
    return d


def _int_hook(text: str) -> Any:
    if len(text) < 19:
        return int(text)
    return _number(text.encode("ascii"), True)


def _first_scan(text: str, idx: int) -> Tuple[Any, int]:
    """Make the C decoder's scanner, then scan: json is imported with the fast path, not at start-up."""
    global _scan_once
    import json.scanner

    decoder = json.JSONDecoder(object_pairs_hook=_pairs_hook, parse_int=_int_hook, parse_float=_float_hook)
    # typeshed types the argument as a make_scanner; any decoder-like object is what it takes.
    _scan_once = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]
    return _scan_once(text, idx)


_scan_once: Callable[[str, int], Tuple[Any, int]] = _first_scan
FAIL = object()


def fast_decode(raw: Union[bytes, bytearray]) -> Any:
    """Decode a message the fast-path regex delimited, or return FAIL."""
    if raw.isascii():
        text = raw.decode("ascii")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return FAIL
        if NONCHAR.search(text):
            return FAIL
    if b"\\u" in raw and _BAD_ESC.search(raw):
        return FAIL
    try:
        return _scan_once(text, 0)[0]
    except (ValueError, _Dup, RecursionError):
        return FAIL
