"""Our codec against the system qemu-ga (7.2), byte for byte.

For every input of the corpus, the real agent's replies are compared with
the replies our parser's items imply.  The corpus only holds requests whose
reply the codec alone decides: guest-ping (with ids of every type), parse
errors and non-objects.  Each case ends with ``\\xff`` and a sentinel ping,
so both sides see the same bytes and the agent is back in a clean state.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qga.codec import JsonParseError, JsonStreamParser
from qga.codec import dumps

pytestmark = pytest.mark.reference

QEMU_GA = "/usr/sbin/qemu-ga"
SENTINEL = b'\xff{"execute":"guest-ping","id":"__end__"}'
SENTINEL_REPLY = b'{"return": {}, "id": "__end__"}\n'


def reply_for(item: Any) -> bytes:
    """The reply qemu-ga sends for one parsed item (codec-only requests)."""
    if isinstance(item, JsonParseError):
        return dumps({"error": {"class": "GenericError", "desc": item.desc}})
    if not isinstance(item, dict):
        return dumps({"error": {"class": "GenericError",
                                "desc": "QMP input must be a JSON object"}})
    if not item:
        return dumps({"error": {"class": "GenericError",
                                "desc": "QMP input lacks member 'execute'"}})
    assert item.get("execute") == "guest-ping" and set(item) <= {"execute", "id"}, item
    reply: dict = {"return": {}}
    if "id" in item:
        reply["id"] = item["id"]
    return dumps(reply)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.path.exists(QEMU_GA):
        pytest.fail(f"{QEMU_GA} is missing: install the qemu-guest-agent package "
                    "(the reference tests compare against it)")
    statedir = tmp_path_factory.mktemp("qga-ref")
    sock = str(statedir / "qga.sock")
    proc = subprocess.Popen([QEMU_GA, "-m", "unix-listen", "-p", sock, "-t", str(statedir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            assert proc.poll() is None, "qemu-ga exited at start-up"
            assert time.monotonic() < deadline, "qemu-ga did not create its socket"
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def agent_replies(sock_path: str, data: bytes, timeout: float = 60.0) -> bytes:
    """Send ``data`` + sentinel; return everything before the sentinel reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.settimeout(timeout)
        s.sendall(data + SENTINEL)
        got = bytearray()
        while not got.endswith(SENTINEL_REPLY):
            chunk = s.recv(1 << 20)
            assert chunk, "agent closed the connection"
            got += chunk
    return bytes(got[:-len(SENTINEL_REPLY)])


def our_replies(data: bytes, chunk: int = 4096) -> bytes:
    parser = JsonStreamParser()
    items: list[Any] = []
    whole = data + SENTINEL
    for i in range(0, len(whole), chunk):
        items += parser.feed(whole[i:i + chunk])
    out = b"".join(reply_for(it) for it in items)
    assert out.endswith(SENTINEL_REPLY)
    return out[:-len(SENTINEL_REPLY)]


def ping(id_text: bytes) -> bytes:
    return b'{"execute":"guest-ping","id":' + id_text + b"}\n"


IDS = [b"1", b"-1", b"0", b"-0", b"9223372036854775807", b"-9223372036854775808",
       b"9223372036854775808", b"18446744073709551615", b"18446744073709551616",
       b"-9223372036854775809", b"12345678901234567890123", b"1e3", b"1E+3", b"0.1", b"1.0",
       b"2.5", b"-0.0", b"1e-400", b"3.14159265358979", b"0.5e-3",
       b'"str"', b'""', b'"\\u0000"', b'"\xc0\x80"', b'"\\u00e9\xc3\xa9"', b'"\\ud83d\\ude00"',
       b'"\xf0\x9f\x98\x80"', b'"\\u007f\x7f"', b'"/\\/\\b\\f\\n\\r\\t\\"\\\\\\\'"',
       b"'single \"quoted\"'", b'"\\uFFFD"', b"true", b"false", b"null", b"[]", b"{}",
       b'[1, "a", [true, {"x": null}]]', b'{"b": 1, "a": 2, "id": 3, "return": 4}',
       b'{"k\\u00e9y": [1.5, -2]}', b'"\xef\xbf\xbd"', b'"' + b"x" * 5000 + b'"']
BAD_IDS = [b"True", b"01", b"1.", b"-", b".5", b"%d", b'"bad\\x"', b'"\\ud800"', b'"\\u00zz"',
           b'"\\ud800\\u0041"', b'"\\uDBFF\\uDFFF"', b'"\\ufffe"', b'"\\u1"', b'"\xc3"',
           b'"\xed\xa0\x80"', b'"\xef\xbf\xbe"', b'"\xc0\xaf"', b'"\xf8\x88\x80\x80\x80"',
           b'"tab\there"', b'"nul\x00x"', b'"ff\xffx"', b'"fe\xfe"', b"\x01", b"\x7f",
           b"0e5", b"1e", b"1e+", b"-a", b"nul", b"abc", b"tru", b"NaN", b"Infinity", b"'\\x'",
           b'"\\\xc3\xa9"', b"\xc3\xa9", b"a" * 1500]
CORPUS = [
    b"[]\n[1,2]\n42\n\"str\"\nnull\ntrue\n", b"{}\n", b'{"execute":"guest-ping",}\n',
    b'{"execute" "guest-ping"}\n', b'{"execute":"guest-ping","execute":"guest-ping"}\n',
    b"abc\ntru\n", b"\x01\n", b"\xff", b"\xfe\xff\xff", b'{"execute":"guest-ping","id":"pa\xffrtial"}\n',
    b"{'execute':'guest-ping'}", b'{"execute":"guest-ping"}{"execute":"guest-ping","id":2}',
    b'\r\n\t {"execute"\n:\n"guest-ping"\r\n}\n', b"}\n]\n,\n:\n", b"[}\n{]\n[1}\n{\"a\":1]\n",
    b'{"a" 1}\n{1:2}\n{{}:1}\n{"a":1 "b":2}\n[1 2]\n[1,]\n[,1]\n', b"12 34 -5 6.5e1 ",
    b'{"a":1,"a":2,"b":"\\x"}\n{"a":"\\x","a":1}\n', b"[" * 1024 + b"]" * 1024,
    b"[" * 1025 + b"]" * 1025, ping(b'{"a":' * 1023 + b"1" + b"}" * 1023), ping(b'{"a":' * 1024 + b"1" + b"}" * 1024),
    b"[" * 2000 + b"]" * 2000, b"\x00{}\n", b"tr\x00ue\n",
] + [ping(i) for i in IDS] + [ping(i) for i in BAD_IDS]


@pytest.mark.parametrize("data", CORPUS, ids=[repr(c[:40]) for c in CORPUS])
def test_replies_match_qemu_ga(agent: str, data: bytes) -> None:
    assert our_replies(data) == agent_replies(agent, data)


#: Numbers beyond the double range, in an id and nested in one: qemu-ga echoes ``inf``,
#: which no JSON parser reads, so the client loses the reply; we echo the client's text.
OUT_OF_RANGE_IDS = [(b"1e400", b"inf"), (b"-1e400", b"-inf"), (b"1E+999", b"inf"),
                    (b"1" * 400, b"inf"), (b"[2e308, {\"a\": -1e999}]", b"[inf, {\"a\": -inf}]")]


@pytest.mark.parametrize("id_text,qemu_text", OUT_OF_RANGE_IDS)
def test_out_of_range_ids_are_echoed_as_json(agent: str, id_text: bytes, qemu_text: bytes) -> None:
    theirs = agent_replies(agent, ping(id_text)).splitlines(keepends=True)
    ours = our_replies(ping(id_text)).splitlines(keepends=True)
    assert theirs[0] == b'{"return": {}, "id": ' + qemu_text + b"}\n"  # the documented difference
    assert ours[0] == b'{"return": {}, "id": ' + id_text + b"}\n"
    assert ours[1:] == theirs[1:]
    assert json.loads(ours[0])["id"] == json.loads(id_text)  # reads back as the value sent
    # The slow (single-quote) parser path too.
    slow = our_replies(b"{'execute':'guest-ping','id':" + id_text + b"}").splitlines()[0]
    assert json.loads(slow)["id"] == json.loads(id_text)


def test_every_split_of_mixed_stream_matches(agent: str) -> None:
    data = b"".join(CORPUS[:20])
    expected = agent_replies(agent, data)
    for chunk in (1, 2, 3, 7, 64):
        assert our_replies(data, chunk) == expected


def test_token_count_limit(agent: str) -> None:
    # 2k+9 tokens; 2 Mi tokens pass, one more fails.
    for k in (1048571, 1048572):
        data = ping(b"[" + b",".join([b"0"] * k) + b"]")
        assert our_replies(data, 1 << 20) == agent_replies(agent, data)


def test_token_size_limit(agent: str) -> None:
    # Token bytes of the message: L + 32 (+1 must stay <= 64 MiB).
    for length in ((64 << 20) - 33, (64 << 20) - 32):
        data = ping(b'"' + b"b" * length + b'"')
        assert our_replies(data, 1 << 20) == agent_replies(agent, data)


def test_token_cut_cascade(agent: str) -> None:
    data = ping(b'"' + b"a" * ((64 << 20) + 10) + b'"')
    assert our_replies(data, 1 << 20) == agent_replies(agent, data)
