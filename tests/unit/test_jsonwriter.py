"""Byte-exact writer examples from spec 1.3 and 1.10."""
from __future__ import annotations

import os

import pytest

from qga.codec import Encoded, JsonText, OutOfRangeNumber, dumps, object_template
from qga.codec.qdict import member_order


def test_reply_orders() -> None:
    assert dumps({"return": {}, "id": 1}) == b'{"return": {}, "id": 1}\n'
    assert dumps({"error": {"class": "GenericError", "desc": "x"}, "id": "a"}) == \
        b'{"id": "a", "error": {"class": "GenericError", "desc": "x"}}\n'


@pytest.mark.parametrize("keys,order", [
    ("version supported_commands", "version supported_commands"),
    ("name enabled success-response", "enabled name success-response"),
    ("count eof buf-b64", "count buf-b64 eof"),
    ("position eof", "eof position"),
    ("exited exitcode signal out-data err-data out-truncated err-truncated",
     "exitcode err-data out-data err-truncated signal out-truncated exited"),
    ("load1m load5m load15m", "load15m load5m load1m"),
    ("zone offset", "zone offset"),
    ("user domain login-time", "login-time domain user"),
])
def test_member_order(keys: str, order: str) -> None:
    assert member_order(tuple(keys.split())) == tuple(order.split())
    d = {k: 0 for k in keys.split()}
    assert dumps(d) == ("{" + ", ".join(f'"{k}": 0' for k in order.split()) + "}\n").encode()


@pytest.mark.parametrize("obj,texts", [
    # all ints; ints, strings, booleans and null; anything else (float, list, bytes, int subclass)
    ({"a": 1, "b": 2}, ["1", "2"]),
    ({"a": "x%sy", "b": True, "c": None, "d": False, "e": 3}, ['"x%sy"', "true", "null", "false", "3"]),
    ({"a": 0.1, "b": "s", "c": [True]}, ["0.10000000000000001", '"s"', "[true]"]),
    ({"a": b"QUJD", "b": 1}, ['"QUJD"', "1"]),
    ({"a": OutOfRangeNumber("1E+400"), "b": 1}, ["1E+400", "1"]),
    ({"a": True, "b": {"c": 2}, "d": "\u00e9"}, ["true", '{"c": 2}', r'"\u00E9"']),
    # keys holding % are text, not format directives
    ({"%s": 1, "%%": "%d", "%": None}, ["1", '"%d"', "null"]),
    ({"b": 1}, ["1"]),
])
def test_objects_of_each_value_kind(obj: dict, texts: list) -> None:
    by_key = dict(zip(obj, texts))
    expected = ("{" + ", ".join(f'"{k}": {by_key[k]}' for k in member_order(tuple(obj))) + "}\n").encode()
    # Twice: the second time the object's shape is known (its template is cached).
    assert dumps(obj) == dumps(obj) == expected
    # Another insertion order is another shape (QDict order depends on it when keys share a bucket).
    rev = dict(reversed(obj.items()))
    assert dumps(rev) == ("{" + ", ".join(f'"{k}": {by_key[k]}' for k in member_order(tuple(rev))) + "}\n").encode()


def test_an_encoded_object_is_written_as_it_was_encoded() -> None:
    members = {"kernel-release": "6.1", "id": "debian", "x": [1, True, None], "y": {"b": 0.5, "a": "\u00e9"}}
    obj = Encoded(members)
    assert obj == members and obj.text + "\n" == dumps(members).decode()
    assert dumps([obj, {"k": obj}]) == b"[" + dumps(members)[:-1] + b', {"k": ' + dumps(members)[:-1] + b"}]\n"
    obj.text = '{"stale": true}'  # the text made at creation is what is written, not the members
    assert dumps(obj) == b'{"stale": true}\n'


def test_json_text_is_copied_and_object_templates_write_as_dumps() -> None:
    assert dumps([JsonText('{"b": 1}'), "x"]) == b'[{"b": 1}, "x"]\n'
    keys = ("type", "cpu", "user", "nice", "system")
    template, positions = object_template(keys)
    values = ['"linux"', 3, 10, 20, 30]
    assert template % tuple(values[i] for i in positions) + "\n" == \
        dumps({"type": "linux", "cpu": 3, "user": 10, "nice": 20, "system": 30}).decode()
    assert tuple(keys[i] for i in positions) == member_order(keys)


@pytest.mark.parametrize("value,text", [
    (0.1, b"0.10000000000000001"), (1.0, b"1"), (2.5, b"2.5"), (-0.0, b"-0"), (1e22, b"1e+22"),
    # Every reply is JSON: a number beyond the double range keeps the text it came with;
    # a non-finite value from anywhere else is written as something a JSON parser reads.
    (OutOfRangeNumber("1E+400"), b"1E+400"), (OutOfRangeNumber("-123e999"), b"-123e999"),
    (float("1e400"), b"1e999"), (float("-1e400"), b"-1e999"), (float("nan"), b"null"),
    (1.2345678901234568e+22, b"1.2345678901234568e+22"), (18446744073709551615, b"18446744073709551615"),
    (-9223372036854775808, b"-9223372036854775808"), (True, b"true"), (False, b"false"),
    (None, b"null"), ([], b"[]"), ({}, b"{}"), ([1, [2, {}]], b"[1, [2, {}]]"),
])
def test_scalars(value: object, text: bytes) -> None:
    assert dumps(value) == text + b"\n"


@pytest.mark.parametrize("s,text", [
    ("\x7f", r'"\u007F"'), ("\U0001F600", r'"\uD83D\uDE00"'), ("\udcff", r'"\uFFFD"'),
    ("é", r'"\u00E9"'), ("\x00\x01\x1f", r'"\u0000\u0001\u001F"'), ("/", '"/"'),
    ('"\\\b\f\n\r\t', r'"\"\\\b\f\n\r\t"'), ("a\\u00e9", r'"a\\u00e9"'),
    ("\ufffe\ufdd0\U0001FFFF", r'"\uFFFD\uFFFD\uFFFD"'), ("\uabcd", r'"\uABCD"'),
    # surrogateescape'd bytes E2 82 are one truncated sequence: one U+FFFD, as in C
    ("\udce2\udc82x", r'"\uFFFDx"'), ("\udcc3\udca9", r'"\u00E9"'), ("\ud800x", r'"\uFFFDx"'),
])
def test_strings(s: str, text: str) -> None:
    assert dumps(s) == text.encode() + b"\n"


def test_big_string_fast() -> None:
    s = "QUJD" * (1 << 20)
    assert dumps({"count": 3, "buf-b64": s, "eof": True}) == \
        b'{"count": 3, "buf-b64": "' + s.encode() + b'", "eof": true}\n'


def test_unsupported_type() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_deep_nesting() -> None:
    deep: object = 1
    for i in range(1500):
        deep = [deep] if i % 2 else {"b": deep, "a": None}
    text = dumps(deep)
    assert text.startswith(b'[{"a": null, "b": [{"a": null') and text.endswith(b"]}]\n")
    assert text.count(b"[") == 750 and text.count(b"{") == 750


def test_bytes_are_written_verbatim_as_a_string() -> None:
    from qga.codec import base64_text

    assert base64_text(b"") == b""
    reply = {"count": 3, "buf-b64": base64_text(b"abc"), "eof": True}
    assert dumps(reply) == b'{"count": 3, "buf-b64": "YWJj", "eof": true}\n'
    assert dumps(reply) == dumps({"count": 3, "buf-b64": "YWJj", "eof": True})
    for unsafe in (b'a"b', b"a\\b", b"\xff", b"\n"):
        with pytest.raises(TypeError):
            dumps({"x": unsafe})


def test_big_verbatim_text_stays_a_piece_of_its_own() -> None:
    from qga.codec import base64_text, dump_pieces

    data = base64_text(os.urandom(300_000))
    reply = {"return": {"count": 300_000, "buf-b64": data, "eof": False}, "id": "x"}
    pieces = dump_pieces(reply)
    assert b"".join(pieces) == dumps(reply)
    assert len(pieces) == 3 and pieces[1] is data  # not copied into a joined reply
    small = {"return": {"count": 3, "buf-b64": base64_text(b"abc"), "eof": True}}
    assert dump_pieces(small) == dumps(small)      # short text: one bytes object
    assert dump_pieces({"return": "text"}) == dumps({"return": "text"})


def test_base64_in_pieces_is_one_string_and_leaves_as_its_pieces() -> None:
    from qga.codec import Base64Pieces, base64_text, dump_pieces

    data = os.urandom(3 * 100_000 + 7)
    pieces = Base64Pieces([base64_text(data[:150_000]), base64_text(data[150_000:])])
    reply = {"return": {"count": len(data), "buf-b64": pieces, "eof": True}}
    whole = {"return": {"count": len(data), "buf-b64": base64_text(data), "eof": True}}
    assert dumps(reply) == dumps(whole)
    out = dump_pieces(reply)
    assert b"".join(out) == dumps(whole)
    assert out[1] is pieces[0] and out[2] is pieces[1]   # not copied into a joined reply
