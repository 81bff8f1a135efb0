"""The streaming parser against spec 1.5-1.7 (the real agent's behaviour)."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qga.codec import JsonParseError, JsonStreamParser
from qga.codec import OutOfRangeNumber, dumps

E = JsonParseError
P = "JSON parse error, "


def parse(data: bytes, fast: bool = True, **kw: int) -> list[Any]:
    p = JsonStreamParser(**kw)
    p._fast = fast and p._fast
    return p.feed(data)


def ping(id_text: bytes) -> bytes:
    return b'{"execute":"guest-ping","id":' + id_text + b"}\n"


# Every row of spec 1.5's JSON part, and the cascades the real agent produces.
TABLE = [
    (b"[]\n[1,2]\n42\n\"str\"\nnull\ntrue\n", [[], [1, 2], 42, "str", None, True]),
    (b"{}\n", [{}]),
    (b'{"execute":"guest-ping",}\n', [E(P + "expecting value")]),
    (b'{"execute" "guest-ping"}\n', [E(P + "missing : in object pair")]),
    (b'{"a":1,"a":2}', [E(P + "duplicate key")]),
    (b'{"a":{"b":1,"b":2}}', [E(P + "duplicate key")]),
    (b"abc\n", [E(P + "invalid keyword 'abc'")]),
    (b"tru\n", [E(P + "invalid keyword 'tru'")]),
    (ping(b"True"), [E(P + "stray 'T'"), E(P + "expecting value")]),
    (b"\x01", [E(P + "stray '\x01'")]),
    (b"\xff", [E(P + "stray '\ufffd'")]),
    (ping(b'"tab\there"'), [E(P + "stray '\"tab\t'"), E(P + "expecting value")]),
    (ping(b'"partial\xff"'), [E(P + "stray '\"partial\ufffd'"), E(P + "expecting value")]),
    (ping(b"01"), [E(P + "stray '01'"), E(P + "expecting value")]),
    (ping(b"1."), [E(P + "stray '1.}'")]),
    (ping(b"-"), [E(P + "stray '-}'")]),
    (ping(b".5"), [E(P + "stray '.'"), E(P + "expecting value")]),
    (ping(b'"bad\\x"'), [E(P + "invalid escape sequence in string")]),
    (ping(b'"\\ud800"'), [E(P + "\\ud800 is not a valid Unicode character")]),
    (ping(b'"\\u00zz"'), [E(P + "\\u00zz is not a valid Unicode character")]),
    (ping(b'"\xc3"'), [E(P + "invalid UTF-8 sequence in string")]),
    (ping(b'"\xed\xa0\x80"'), [E(P + "invalid UTF-8 sequence in string")]),
    (ping(b"%d"), [E(P + "stray '%'"), E(P + "expecting value")]),
    (ping(b"0e5"), [E(P + "expected separator in dict")]),
    (ping(b'"\\u1"'), [E(P + '\\u1" is not a valid Unicode character')]),
    (b'{"a":1,"a":2,"b":"\\x"}', [E(P + "duplicate key")]),
    (b'{"a":"\\x","a":1}', [E(P + "invalid escape sequence in string")]),
    (b'"ab\x00cd"', [E(P + "stray '\"ab'")]),
    (b"}]", [E(P + "expecting value"), E(P + "expecting value")]),
    (b"[1}{]", [E(P + "expected separator in list"), E(P + "expecting value")]),
    (b"{1:2}{{}:1}", [E(P + "key is not a string in object")] * 2),
    (b"[1 2]", [E(P + "expected separator in list")]),
    (b"a" * 1500 + b" ", [E((P + "invalid keyword '" + "a" * 1500)[:len(P) + 1023])]),
]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("data,items", TABLE, ids=[repr(t[0][:30]) for t in TABLE])
def test_table(data: bytes, items: list[Any], fast: bool) -> None:
    assert parse(data, fast) == items


@pytest.mark.parametrize("text,value", [
    (b"9223372036854775807", 9223372036854775807), (b"9223372036854775808", 9223372036854775808),
    (b"18446744073709551615", 18446744073709551615),
    (b"18446744073709551616", 1.8446744073709552e19), (b"-9223372036854775809", -9.223372036854776e18),
    (b"12345678901234567890123", 1.2345678901234568e+22), (b"1e3", 1000.0), (b"-0", 0),
    (b"1e400", OutOfRangeNumber("1e400")), (b'"\\u0000\xc0\x80"', "\x00\x00"), (b"'it\\'s \"x\"'", "it's \"x\""),
    (b'"\\ud83d\\ude00\xf0\x9f\x98\x80"', "\U0001F600" * 2), (b'"\\/"', "/"), (b"1" * 5000, OutOfRangeNumber("1" * 5000)),
])
@pytest.mark.parametrize("fast", [True, False])
def test_values(text: bytes, value: Any, fast: bool) -> None:
    got = parse(b'{"id":' + text + b"}", fast)
    assert got == [{"id": value}] and type(got[0]["id"]) is type(value)
    if isinstance(value, OutOfRangeNumber):
        assert got[0]["id"].text == text.decode()


def test_top_level_scalar_needs_lookahead() -> None:
    p = JsonStreamParser()
    assert p.feed(b"123") == []
    assert p.feed(b"4") == []
    assert p.feed(b" ") == [1234]
    assert p.feed(b"tru") == [] and p.feed(b"e,") == [True, E(P + "expecting value")]


MIXED = (b'{"execute":"guest-ping"}{"execute":"guest-ping","id":[1,{"a":"\xc3\xa9\\n"}]}\n'
         b"[1,2] 42 'sq\\'' {\"a\":1.5e3}\r\n{\"a\":True}\n\x01\xff\"x\xfe{\"d\":1,\"d\":2}"
         b'{"execute":"guest-ping","id":-0.0}\t{"x":"\\ud800"} null\n')


def test_split_at_every_offset() -> None:
    whole = parse(MIXED)
    assert len(whole) > 10
    for i in range(len(MIXED) + 1):
        p = JsonStreamParser()
        assert p.feed(MIXED[:i]) + p.feed(MIXED[i:]) == whole, i
    p = JsonStreamParser()
    assert [x for b in MIXED for x in p.feed(bytes((b,)))] == whole


def test_ff_at_every_position_resets() -> None:
    req = b'{"execute":"guest-ping","id":[12, 1.5e3, "a\\"b", true]}'
    for i in range(len(req)):
        items = parse(req[:i] + b"\xff" + req)
        assert len(items) == 2, (i, items)
        assert isinstance(items[0], E) and items[0].desc.startswith(P + "stray '")
        assert items[0].desc.endswith("\ufffd'")
        assert items[1] == json.loads(req)


def test_state_survives_feeds_and_reset() -> None:
    p = JsonStreamParser()
    assert p.feed(b'{"execute":"guest-ping","id":"pa') == []
    assert p.feed(b'rtial"}\n') == [{"execute": "guest-ping", "id": "partial"}]
    p.feed(b'{"a":')
    p.reset()
    assert p.feed(b"[]") == [[]]


def test_nesting_limit() -> None:
    assert parse(b"[" * 1024 + b"]" * 1024) != []
    items = parse(b"[" * 1025 + b"]" * 1025)
    assert items == [E("JSON nesting depth limit exceeded")] + [E(P + "expecting value")] * 1025
    items = parse(b"[" * 3 + b"]" * 3, max_depth=2)
    assert items == [E("JSON nesting depth limit exceeded")] + [E(P + "expecting value")] * 3


def test_token_limits_small_scale() -> None:
    assert parse(b"[1,2,3]", max_tokens=7) == [[1, 2, 3]]
    assert parse(b"[1,2,3]", max_tokens=6) == [E("JSON token count limit exceeded")]
    assert parse(b"[1,2,3]", max_tokens=5) == [E("JSON token count limit exceeded"),
                                               E(P + "expecting value")]
    # token bytes: '"abc"' is 5, plus [ and ] -> 7; sum + 1 must stay <= limit
    assert parse(b'["abc"]', max_token_bytes=8) == [["abc"]]
    assert parse(b'["abc"]', max_token_bytes=7)[0] == E("JSON token size limit exceeded")
    # a single token longer than the limit is cut and the rest lexed afresh
    assert parse(b'"abcdefgh" ', max_token_bytes=6) == [
        E("JSON token size limit exceeded"), E(P + "invalid keyword 'gh'")]


def test_huge_inputs_bounded_time() -> None:
    p = JsonStreamParser()
    line = b'{"execute":"guest-ping","id":"' + b"A" * (70 << 20) + b'"}\n'
    # CPU time of this thread, not wall time: other load cannot stretch it.  A
    # quadratic pass over 70 MiB would exceed the bound by far.
    t0 = time.thread_time()
    items: list[Any] = []
    for i in range(0, len(line), 1 << 20):
        items += p.feed(line[i:i + (1 << 20)])
    assert items[0] == E("JSON token size limit exceeded")
    assert len(p._buf) <= (1 << 20)  # no more than one feed is kept
    deep = b"[" * 2000 + b"]" * 2000 + b"\n" + b"{" * 2000 + b"}" * 2000 + b"\n"
    items = p.feed(b"\xff" + deep)
    assert len(p.feed(b'{"execute":"guest-ping"}')) == 1
    assert time.thread_time() - t0 < 30
    assert len(items) > 2000


def test_random_bytes_do_not_crash() -> None:
    import random
    rnd = random.Random(1)
    p = JsonStreamParser()
    for _ in range(300):
        data = bytes(rnd.choice(b'{}[]:,"\'\\ \n0123456789-+.eEtrufalsn\x00\xff\xc3\xa9u')
                     for _ in range(rnd.randint(1, 50)))
        for item in p.feed(data):
            if isinstance(item, E):
                dumps(item.desc)
    p.feed(b"\xff\n")
    assert p.feed(b'{"a":1}') == [{"a": 1}]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=20)


def _valid_text(v: Any) -> bool:
    """Noncharacters and surrogates are written as U+FFFD, so skip them."""
    if isinstance(v, str):
        return all(not (0xD800 <= ord(c) <= 0xDFFF or 0xFDD0 <= ord(c) <= 0xFDEF
                        or (ord(c) & 0xFFFE) == 0xFFFE) for c in v)
    if isinstance(v, list):
        return all(map(_valid_text, v))
    if isinstance(v, dict):
        return all(map(_valid_text, v)) and all(map(_valid_text, v.values()))
    return True


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(1, 17))
def test_roundtrip_property(value: Any, chunk: int) -> None:
    if not _valid_text(value):
        return
    data = dumps({"id": value})
    for fast in (True, False):
        p = JsonStreamParser()
        p._fast = fast
        items = [x for i in range(0, len(data), chunk) for x in p.feed(data[i:i + chunk])]
        # Value equality only: bytes need not be a fixpoint, as QEMU's are not
        # either (-0.0 is written "-0" and read back as 0; keys sharing a hash
        # bucket come out newest first, so their order flips on every echo).
        assert items == [{"id": value}]


# -- big strings: the base64 shortcut of the string scan and the reused buffer --

_B64_BODY = __import__("base64").b64encode(bytes(range(256)) * 96)   # 32 KiB of base64
#: Inserted into a big base64 string: each defeats the shortcut in its own way
#: (escapes, a control byte, bad or good UTF-8, an impossible byte, padding or
#: a space inside: plain JSON, not canonical base64).
_INSERTS = [b"", b"\\/", b"\\u0041", b"\\u0000", b"\x01", b"\x1f", b"\xc3(", b"\xc3\xa9", b"\xff",
            b"==", b" ", b"\\", b"'"]


def _big_request(insert: bytes, at: int) -> bytes:
    return (b'{"execute":"guest-file-write","arguments":{"handle":1,"buf-b64":"'
            + _B64_BODY[:at] + insert + _B64_BODY[at:] + b'"}}\n{"execute":"guest-ping"}\n')


def _feed_in(p: JsonStreamParser, data: bytes, chunk: int, in_place: bool = False) -> list[Any]:
    """Feed ``data`` in pieces; ``in_place``: as the agent does, each piece
    "read" into the parser's own buffer (a view longer than what the read returns)."""
    out: list[Any] = []
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        if in_place:
            view = p.read_buffer(len(piece) + 5)
            view[:len(piece)] = piece
            out += p.feed(view[:len(piece)])
            del view
        else:
            out += p.feed(piece)
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 16, 1000])
def test_reads_into_the_parser_buffer_get_the_same_items(chunk: int) -> None:
    whole = parse(MIXED)
    assert _feed_in(JsonStreamParser(), MIXED, chunk, in_place=True) == whole
    p = JsonStreamParser()
    for i in range(0, len(MIXED), 37):   # mixed with copied feeds, after partial tokens
        assert _feed_in(p, MIXED[:i], chunk, in_place=True) + _feed_in(p, MIXED[i:], chunk) == whole, i


@pytest.fixture
def accelerated() -> Any:
    from qga import qbase64
    from tests.prereq import require
    require(None if qbase64.use_accelerator(True) else "pybase64 not installed (pip install .[fast])")
    yield qbase64
    qbase64.use_accelerator(True)


@pytest.mark.parametrize("insert", _INSERTS, ids=repr)
def test_big_string_shortcut_agrees_with_the_table_scan(accelerated: Any, insert: bytes) -> None:
    assert accelerated.fast_canonical(_B64_BODY)   # the shortcut is taken for the clean stretches
    for at in (0, 5, 4096, 9000, len(_B64_BODY) - 3, len(_B64_BODY)):
        data = _big_request(insert, at)
        accelerated.use_accelerator(False)
        expected = JsonStreamParser().feed(data)
        accelerated.use_accelerator(True)
        assert len(expected) >= 2
        for chunk in (len(data), 65536, 5000, 4099):
            assert _feed_in(JsonStreamParser(), data, chunk) == expected, (insert, at, chunk)
            assert _feed_in(JsonStreamParser(), data, chunk, in_place=True) == expected, (insert, at, chunk)
        if insert == b"":
            assert expected[0]["arguments"]["buf-b64"] == _B64_BODY.decode()


def test_big_string_errors_are_qemus(accelerated: Any) -> None:
    def first(insert: bytes) -> Any:
        return _feed_in(JsonStreamParser(), _big_request(insert, 9000), 5000)[0]
    assert first(b"\\/")["arguments"]["buf-b64"] == (_B64_BODY[:9000] + b"/" + _B64_BODY[9000:]).decode()
    assert first(b"\\u0000")["arguments"]["buf-b64"][9000] == "\0"
    assert first(b"\xc3(") == E(P + "invalid UTF-8 sequence in string")
    stray = first(b"\x01")
    assert isinstance(stray, E) and stray.desc == P + "stray '\"" + _B64_BODY[:9000].decode() + "\x01'"


def test_control_byte_in_an_unfinished_big_string_is_reported_at_once(accelerated: Any) -> None:
    p = JsonStreamParser()
    assert p.feed(b'{"execute":"guest-file-write","arguments":{"buf-b64":"' + _B64_BODY) == []
    assert p.feed(_B64_BODY + b"\x02" + _B64_BODY)[0].desc.startswith(P + "stray '\"")


def test_stale_bytes_of_a_big_message_are_never_read() -> None:
    """The input buffer is reused: what an earlier, longer message left behind
    it (letters, digits, blanks, quotes) must not extend a later token."""
    whole = parse(MIXED)
    for filler in (b"e", b"1", b" ", b"}", b'\\"'):
        junk = b'{"id":"' + filler * 5000 + b'"}'
        for i in range(len(MIXED) + 1):
            p = JsonStreamParser()
            assert len(p.feed(junk)) == 1
            assert p.feed(MIXED[:i]) + p.feed(MIXED[i:]) == whole, (filler, i)


def test_buffer_of_a_big_message_is_kept_then_released() -> None:
    p = JsonStreamParser()
    big = b'{"id":"' + b"A" * (1 << 20) + b'"}'
    assert _feed_in(p, big, 1 << 16) == [{"id": "A" * (1 << 20)}]
    kept = p._buf
    assert len(kept) >= 1 << 20
    assert _feed_in(p, big, 1 << 16) == [{"id": "A" * (1 << 20)}] and p._buf is kept
    p.feed(b'{"id":"unfinished')
    p.release_memory()
    assert p._buf is kept                      # a message is in progress: kept
    assert p.feed(b'"}') == [{"id": "unfinished"}]
    p.release_memory()
    assert len(p._buf) < len(big)
    assert p.feed(b'{"id":1}') == [{"id": 1}]


def _counting_fast_decode(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every message the fast path decodes."""
    from qga.codec import lexer

    seen: list[bytes] = []
    real = lexer.fast_decode

    def counting(raw: Any) -> Any:
        seen.append(bytes(raw))
        return real(raw)

    monkeypatch.setattr(lexer, "fast_decode", counting)
    return seen


@pytest.mark.parametrize("text", [
    b'{"execute":"guest-get-fsinfo"}\n',
    b'{"execute": "guest-exec-status", "arguments": {"pid": 4242}}\r\n',
])
def test_a_polled_request_is_parsed_once_and_each_value_is_its_own(
        monkeypatch: pytest.MonkeyPatch, text: bytes) -> None:
    seen = _counting_fast_decode(monkeypatch)
    p = JsonStreamParser()
    first = p.feed(text)
    first[0]["execute"] = "changed by a consumer"
    for value in first[0].values():
        if isinstance(value, dict):
            value.clear()
    again = [p.feed(text) for _ in range(3)]
    assert again == [[json.loads(text)]] * 3
    assert len(seen) == 1   # the same text again is not decoded again
    assert again[0][0] is not again[1][0]
    if "arguments" in again[0][0]:
        assert again[0][0]["arguments"] is not again[1][0]["arguments"]


@pytest.mark.parametrize("texts", [
    [ping(b"%d" % i) for i in range(3)],                           # an id changes with each request
    [b'{"execute":"guest-ping"}{"execute":"guest-ping"}'] * 3,     # two requests in one read
    [b'{"execute":"guest-exec","arguments":{"path":"/bin/true","arg":["-x"]}}\n'] * 3,  # a list
])
def test_requests_that_are_not_kept(monkeypatch: pytest.MonkeyPatch, texts: list[bytes]) -> None:
    seen = _counting_fast_decode(monkeypatch)
    p = JsonStreamParser()
    values = [v for t in texts for v in p.feed(t)]
    assert values == [json.loads(v) for t in texts for v in t.replace(b"}{", b"}\n{").splitlines()]
    assert len(seen) == len(values)


def test_kept_requests_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _counting_fast_decode(monkeypatch)
    p = JsonStreamParser()
    texts = [b'{"execute":"guest-file-read","arguments":{"handle":%d}}' % h for h in range(200)]
    for t in texts:
        p.feed(t)
    assert len(p._known) <= 64
    p.feed(texts[-1])   # the newest is still known
    assert len(seen) == 200


def test_a_known_text_behind_a_partial_message_is_not_taken_whole() -> None:
    p = JsonStreamParser()
    req = b'{"execute":"guest-ping"}'
    assert p.feed(req) == p.feed(req) == [{"execute": "guest-ping"}]
    assert p.feed(b'{"execute":') == []
    # The same bytes are now the value of the pending object's member.
    assert p.feed(req) == []
    assert p.feed(b"}") == [{"execute": {"execute": "guest-ping"}}]
