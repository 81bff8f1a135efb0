"""Streaming JSON parser with qemu-ga's exact semantics (spec 1.5-1.7).

QEMU splits its input in three layers; this module holds the first two, and
:mod:`qga.codec.parser` the third and the fast path:

* a lexer (a byte-level DFA) that cuts the stream into tokens.  A byte the
  DFA cannot accept is a *lexical error*: it yields one error item and the
  lexer then skips input up to a resynchronisation byte;
* a "streamer" that queues tokens until brackets balance (or a scalar
  token arrives at depth 0) and enforces the per-message limits;
* a recursive-descent parser over the queued tokens, whose first error
  wins.

Python cannot afford a loop per input byte, so the lexer scans runs with
``bytes.find``/``translate`` and compiled regexes, and keeps its state across
``feed()`` calls so that a 64 MiB string arriving in 1 MiB chunks is scanned
once.  Small, well-formed objects take a fast path: one regex recognises
the whole message (QEMU's token grammar, bounded depth) and the C ``json``
decoder builds it.  Whenever that path cannot be sure its result equals
QEMU's (non-ASCII, suspicious escapes, duplicate keys, huge numbers ...)
the message is re-lexed by the exact path.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Union

from qga import qbase64
from qga.codec.parser import (FAIL, FAST_MESSAGE, JsonParseError, ParseFailure, fast_decode,
                               parse_tokens)
from qga.codec.tokens import COLON, COMMA, FLOAT, INT, KW, LC, LS, RC, RS, STR
from qga.codec.utf8 import NONCHAR, qemu_lossy_decode

__all__ = ["JsonParseError", "JsonStreamParser"]

_STRUCT = {0x7B: LC, 0x7D: RC, 0x5B: LS, 0x5D: RS, 0x3A: COLON, 0x2C: COMMA}
# Lexer states (numbers keep their own sub-state in _nstate).
_START, _RECOVER, _DQ, _SQ, _NUM, _KWD = range(6)
_N_SIGN, _N_ZERO, _N_DIGITS, _N_MANT, _N_MANTD, _N_EXPE, _N_EXPS, _N_EXPD = range(8)

_WS = frozenset(b" \t\r\n")
# The run patterns below all start with X*, so .match() never returns None
# (what the "X* matches" type-ignores say).
_DIGITS = re.compile(rb"[0-9]*")
_LOWER = re.compile(rb"[a-z]*")
# IN_RECOVERY skips everything but structural chars, controls other than TAB,
# and the impossible UTF-8 bytes 0xFE/0xFF (spec 1.6).
_RECOVER_RUN = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]*")
_DQ_BODY = re.compile(rb'[^"\\\x00-\x1f\xfe\xff]*(?:\\[\x20-\xfd][^"\\\x00-\x1f\xfe\xff]*)*')
_SQ_BODY = re.compile(rb"[^'\\\x00-\x1f\xfe\xff]*(?:\\[\x20-\xfd][^'\\\x00-\x1f\xfe\xff]*)*")
_WS_RUN = re.compile(rb"[ \t\r\n]*")
_FAST_WINDOW = 1 << 16   # the regex fast path is for small messages only
_SCAN_WINDOW = 1 << 18
_BIG = 1 << 12           # string tokens decoded at lex time
#: Input is kept in a buffer of at least this size, and one grown for a big
#: message is kept (its pages stay mapped) while no more than _RETAIN.
_MIN_BUFFER = 1 << 16
_RETAIN = 16 << 20
#: Requests of up to this many bytes (a whole read) are kept by their text, and
#: at most this many of them; only exact types (a big number's
#: OutOfRangeNumber is a float subclass, and it is not kept).
_KNOWN_TEXT = 256
_KNOWN_MAX = 64
_KNOWN_SCALARS = frozenset((str, int, float, bool, type(None)))
# 0x80 for a byte a string body cannot hold unescaped (controls, backslash,
# 0xFE/0xFF), 0 for the others; the quote itself ends the stretch scanned.
_NOT_PLAIN = bytes(0x80 if i < 0x20 or i in (0x5C, 0xFE, 0xFF) else 0 for i in range(256))


class JsonStreamParser:
    """Incremental parser: feed bytes, get completed values and errors.

    Limits follow QEMU: total token bytes per message, tokens per message,
    and brace+bracket nesting (counting the outer object).
    """

    def __init__(self, max_token_bytes: int = 64 << 20, max_tokens: int = 2 << 20,
                 max_depth: int = 1024) -> None:
        self._max_bytes = max_token_bytes
        self._max_tokens = max_tokens
        self._max_depth = max_depth
        # The fast path is only sound when a bounded-depth message cannot hit a limit.
        self._fast = max_depth >= 4
        self.reset()

    def reset(self) -> None:
        """Forget all buffered input and partial state (a fresh agent)."""
        # Input is _buf[:_n]; the bytes after it are stale.  Reusing one
        # buffer spares a big message the page faults of a fresh one.
        self._buf = bytearray(_MIN_BUFFER)
        self._n = 0
        self._pos = 0          # next byte to lex
        self._state = _START
        self._ts = 0           # start of the token being lexed
        self._ns = _N_SIGN     # number sub-state
        #: Requests met before, by their exact text (see _reusable).
        self._known: Dict[bytes, Dict[str, Any]] = {}
        self._reset_message()

    def _remember(self, text: bytes, val: Dict[str, Any]) -> None:
        """Keep the value of a request ``text`` (the whole of one read) for its next arrival."""
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # ids and arguments may vary without end: start again
        self._known[text] = _fresh(val)

    def _reset_message(self) -> None:
        self._types: list[int] = []
        self._texts: list[Any] = []   # bytes, None (structural), or pre-decoded str
        self._brace = self._bracket = 0
        self._size = 0

    # -- streamer -----------------------------------------------------------
    def _token(self, t: int, text: Any, size: int, out: list[Any]) -> None:
        """json_message_process_token(): queue a token, maybe finish a message."""
        if t == LC:
            self._brace += 1
        elif t == RC:
            self._brace -= 1
        elif t == LS:
            self._bracket += 1
        elif t == RS:
            self._bracket -= 1
        if self._size + size + 1 > self._max_bytes:
            item: Any = JsonParseError("JSON token size limit exceeded")
        elif len(self._types) + 1 > self._max_tokens:
            item = JsonParseError("JSON token count limit exceeded")
        elif self._brace + self._bracket > self._max_depth:
            item = JsonParseError("JSON nesting depth limit exceeded")
        else:
            self._types.append(t)
            self._texts.append(text)
            self._size += size
            if (self._brace > 0 or self._bracket > 0) and self._brace >= 0 \
                    and self._bracket >= 0:
                return
            try:
                item = parse_tokens(self._types, self._texts)
            except ParseFailure as exc:
                item = JsonParseError("JSON parse error, " + str(exc))
        self._reset_message()
        out.append(item)

    def _lex_error(self, tok: bytes, out: list[Any]) -> None:
        """A byte the DFA rejects: one error, drop the message, skip input."""
        self._reset_message()
        out.append(JsonParseError("JSON parse error, stray '" + qemu_lossy_decode(tok) + "'"))
        self._state = _RECOVER

    def _cut(self, out: list[Any]) -> int:
        """A token grew past the limit: QEMU hands the piece on and restarts."""
        self._token(-1, None, self._max_bytes + 1, out)
        self._state = _START
        return self._ts + self._max_bytes + 1

    # -- lexer ----------------------------------------------------------------
    def release_memory(self) -> None:
        """Shrink a buffer grown for a big message, unless one is in progress."""
        if self._n == 0 and len(self._buf) > _MIN_BUFFER:
            self._buf = bytearray(_MIN_BUFFER)

    def read_buffer(self, size: int) -> memoryview:
        """A view of ``size`` free bytes after the buffered input, for a read.

        Pass what the read filled (a prefix of the view) to :meth:`feed`,
        which then copies nothing; drop the view before the next call.
        """
        end = self._n + size
        if len(self._buf) < end:
            self._buf += bytes(end - len(self._buf))
        return memoryview(self._buf)[self._n:end]

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> list[Any]:
        """Lex and parse ``data``; return the completed items in order.

        Items are parsed values or JsonParseError.  Partial input is kept
        (copied: ``data`` may be a view of a buffer the caller reuses) for
        the next call.
        """
        out: list[Any] = []
        size = len(data)
        if not size:
            return out
        # A read that is one request met before, with nothing pending.
        whole = not self._n and size <= _KNOWN_TEXT and self._state == _START and not self._types
        if whole:
            known = self._known.get(bytes(data))
            if known is not None:
                out.append(_fresh(known))
                return out
        n = self._n + size
        buf = self._buf
        if not (isinstance(data, memoryview) and data.obj is buf):   # else read in place
            buf[self._n:n] = data   # over the stale bytes; grows the buffer if they are too few
        self._n = n
        pos = self._pos
        while pos < n:
            st = self._state
            if st == _START:
                c = buf[pos]
                if c in _WS:
                    pos = _WS_RUN.match(buf, pos + 1, n).end()  # type: ignore[union-attr]  # X* matches
                    continue
                # Fast path for a whole small object; skipped at once when no
                # '}' is near, so a big message's first chunk costs nothing.
                if c == 0x7B and self._fast and not self._types \
                        and buf.find(b"}", pos, min(n, pos + _FAST_WINDOW)) >= 0:
                    m = FAST_MESSAGE.match(buf, pos, min(n, pos + _FAST_WINDOW))
                    if m is not None:
                        end = m.end()
                        if end - pos < self._max_bytes and end - pos <= self._max_tokens:
                            val = fast_decode(buf[pos:end])
                            if val is not FAIL:
                                out.append(val)
                                if pos == 0 and whole and _reusable(val) \
                                        and not bytes(buf[end:n]).strip(b" \t\r\n"):
                                    self._remember(bytes(buf[:n]), val)
                                pos = end
                                continue
                t = _STRUCT.get(c)
                self._ts = pos
                pos += 1
                if t is not None:
                    self._token(t, None, 1, out)
                elif c == 0x22:
                    self._state = _DQ
                elif c == 0x27:
                    self._state = _SQ
                elif c == 0x2D or 0x30 <= c <= 0x39:
                    self._state = _NUM
                    self._ns = _N_SIGN if c == 0x2D else _N_ZERO if c == 0x30 else _N_DIGITS
                elif 0x61 <= c <= 0x7A:
                    self._state = _KWD
                else:
                    self._lex_error(bytes((c,)), out)
            elif st == _RECOVER:
                pos = _RECOVER_RUN.match(buf, pos, n).end()  # type: ignore[union-attr]  # X* matches
                if pos < n:
                    self._state = _START
            elif st == _NUM:
                pos = self._lex_number(buf, pos, n, out)
            else:
                ts = self._ts
                limit = ts + self._max_bytes + 1
                if st == _KWD:
                    pos = _LOWER.match(buf, pos, n).end()  # type: ignore[union-attr]  # X* matches
                    if pos >= limit:
                        pos = self._cut(out)
                    elif pos < n:
                        self._state = _START
                        self._token(KW, bytes(buf[ts:pos]), pos - ts, out)
                    continue
                new = self._lex_string(buf, pos, n, limit, out)
                if new == pos:
                    break  # a backslash ends the data: wait for its partner
                pos = new
        # Compact: keep only the token in progress.  It moves at most once,
        # when it began in this feed (then it is no longer than ``data``).
        keep = self._ts if self._state in (_DQ, _SQ, _NUM, _KWD) else pos
        if keep == n:
            self._n = self._pos = self._ts = 0
            if len(buf) > _RETAIN:
                self._buf = bytearray(_MIN_BUFFER)
        else:
            if keep:
                with memoryview(buf) as view:
                    view[:n - keep] = view[keep:n]
            self._n = n - keep
            self._pos = pos - keep
            self._ts -= keep
        return out

    def _lex_string(self, buf: bytearray, pos: int, n: int, limit: int, out: list[Any]) -> int:
        quote = 0x22 if self._state == _DQ else 0x27
        # Find the next quote at C speed; only if the stretch before it holds
        # a backslash or a bad byte do we need the exact (slower) regex.
        q = buf.find(quote, pos, n)
        e = q if q >= 0 else n
        for a in range(_plain_prefix(buf, pos, e), e, _SCAN_WINDOW):   # bounded temporary copies
            # A table translate is a plain byte loop (a delete set is not) and
            # isascii() checks the result a word at a time.
            if not buf[a:min(e, a + _SCAN_WINDOW)].translate(_NOT_PLAIN).isascii():
                e = (_DQ_BODY if quote == 0x22 else _SQ_BODY).match(buf, a, n).end()  # type: ignore[union-attr]  # X* matches
                break
        ts = self._ts
        if e >= limit:
            return self._cut(out)
        if e >= n:
            return e
        ch = buf[e]
        if ch == quote:
            self._state = _START
            self._token(STR, self._big_string(buf, ts, e) if e - ts > _BIG
                        else bytes(buf[ts:e + 1]), e + 1 - ts, out)
            return e + 1
        if ch == 0x5C:
            if e + 1 == limit:
                return self._cut(out)
            if e + 1 >= n:
                return e   # rescan the backslash when its partner arrives
            e += 1
        self._lex_error(bytes(buf[ts:e + 1]), out)
        return e + 1

    @staticmethod
    def _big_string(buf: bytearray, ts: int, e: int) -> Any:
        """Decode a big string token straight from the buffer when that
        cannot fail (no escapes, plain UTF-8): one copy instead of three.
        Otherwise keep the raw token for the exact decoder."""
        if buf.find(b"\\", ts + 1, e) < 0:
            with memoryview(buf) as view:
                try:
                    text = str(view[ts + 1:e], "utf-8")
                except UnicodeDecodeError:
                    text = None
            if text is not None and (text.isascii() or not NONCHAR.search(text)):
                return text
        return bytes(buf[ts:e + 1])

    def _lex_number(self, buf: bytearray, pos: int, n: int, out: list[Any]) -> int:
        """Run QEMU's number DFA from the saved sub-state; digit runs by regex."""
        ts = self._ts
        limit = ts + self._max_bytes + 1
        ns = self._ns
        while True:
            if pos >= limit:
                return self._cut(out)
            if pos >= n:
                self._ns = ns
                return pos
            c = buf[pos]
            digit = 0x30 <= c <= 0x39
            if ns in (_N_DIGITS, _N_MANTD, _N_EXPD):
                if digit:
                    pos = _DIGITS.match(buf, pos, n).end()  # type: ignore[union-attr]  # X* matches
                    continue
                if ns != _N_EXPD and (c == 0x65 or c == 0x45):
                    ns = _N_EXPE
                elif ns == _N_DIGITS and c == 0x2E:
                    ns = _N_MANT
                else:
                    self._state = _START
                    self._token(INT if ns == _N_DIGITS else FLOAT,
                                bytes(buf[ts:pos]), pos - ts, out)
                    return pos
            elif ns == _N_ZERO:
                if c == 0x2E:
                    ns = _N_MANT
                elif not digit:
                    self._state = _START
                    self._token(INT, bytes(buf[ts:pos]), pos - ts, out)
                    return pos
                else:
                    break
            elif ns == _N_SIGN:
                if not digit:
                    break
                ns = _N_ZERO if c == 0x30 else _N_DIGITS
            elif ns == _N_EXPE and (c == 0x2B or c == 0x2D):
                ns = _N_EXPS
            elif digit:  # _N_MANT, _N_EXPE, _N_EXPS
                ns = _N_MANTD if ns == _N_MANT else _N_EXPD
            else:
                break
            pos += 1
        # The offending byte is part of the stray token.
        self._lex_error(bytes(buf[ts:pos + 1]), out)
        return pos + 1


def _reusable(val: Any) -> bool:
    """Whether ``val`` may be kept for the next request of the same text.

    Host tools poll with the same bytes (``{"execute": "guest-get-fsinfo"}``,
    guest-exec-status of one pid): such a request is an object without an
    ``id`` (which changes with each request) whose members are scalars or
    objects of scalars.  The parse depends on nothing but the text, so the
    value found once is the value every time.
    """
    if type(val) is not dict or "id" in val:
        return False
    for member in val.values():
        if type(member) is dict:
            if not all(type(v) in _KNOWN_SCALARS for v in member.values()):
                return False
        elif type(member) not in _KNOWN_SCALARS:
            return False
    return True


def _fresh(val: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a :func:`_reusable` request that shares no object with it."""
    return {k: dict(v) if type(v) is dict else v for k, v in val.items()}


def _plain_prefix(buf: bytearray, a: int, e: int) -> int:
    """Where the byte-table scan of the string stretch ``buf[a:e]`` must start.

    A long stretch that the base64 accelerator accepts (file data, nearly
    always) holds no escape and no control byte, which its SIMD check proves
    several times faster than the table scan; up to 3 bytes that do not
    complete a base64 group are left to the scan.
    """
    if e - a < _BIG:
        return a
    cut = e - (e - a) % 4
    with memoryview(buf) as view:
        return cut if qbase64.fast_canonical(view[a:cut]) else a
