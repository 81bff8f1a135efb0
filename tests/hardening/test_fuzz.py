"""Structure-aware fuzzing of the parser and the dispatcher (issue 8).

In-process: :class:`JsonStreamParser` + :class:`Dispatcher` with a real
Context (side-effecting handlers stubbed, read-only ones real).  Over a
socket: the running agent, with every side-effecting group blocked so that
fuzzed requests cannot touch this machine.

Invariants checked for every example: no exception escapes, every reply is
one well-formed JSON line (0xFF-prefixed only for guest-sync-delimited), no
handler raised an unexpected exception ("internal error"), replies carry the
request ids in request order and at most once, and ``0xFF`` +
``guest-sync-delimited`` is answered afterwards.

Budget: ``QGA_FUZZ_EXAMPLES`` (default 150 in CI, 20,000 with ``QGA_FULL=1``).
"""
from __future__ import annotations

import json
import tempfile
import time
import tracemalloc
from typing import Any, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qga.agent import TRIM_DELAY
from qga.codec import JsonStreamParser
from tests.agentproc import AgentProcess, start
from tests.hardening.inproc import InProcessAgent
from tests.hardening.strategies import encode, requests, streams
from tests.hardening.util import budget, parse_reply_line, rss_kib

EXAMPLES = budget("QGA_FUZZ_EXAMPLES", 150, 20000)
SAFE_BLOCK = "fsfreeze,system-control,user-auth,unrestricted"
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.function_scoped_fixture])

_sync_counter = iter(range(1 << 40, 1 << 41))


def sync_request(sync_id: int) -> bytes:
    """0xFF then guest-sync-delimited, as libvirt and QEMU's tests resynchronise."""
    return b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                  "arguments": {"id": sync_id}}).encode()


def check_replies(lines: List[bytes]) -> List[dict]:
    """Every reply well-formed; no handler bug leaked as an internal error."""
    replies = []
    for line in lines:
        reply = parse_reply_line(line)
        if line.startswith(b"\xff"):
            assert "return" in reply, f"0xFF before an error reply: {line!r}"
        if "error" in reply:
            assert not reply["error"]["desc"].startswith("internal error"), reply
        replies.append(reply)
    return replies


@pytest.fixture(scope="module")
def inproc() -> Iterator[InProcessAgent]:
    """One in-process agent for all examples (state dir removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="qga-fuzz-") as tmp:
        agent = InProcessAgent(tmp)
        yield agent
        agent.close()


@FUZZ_SETTINGS
@given(chunks=streams())
def test_fuzz_inprocess_stream(inproc: InProcessAgent, chunks: List[bytes]) -> None:
    """Mutated and truncated request streams: well-formed replies, then sync is answered."""
    inproc.take()
    for chunk in chunks:
        inproc.feed(chunk)
    sync_id = next(_sync_counter)
    inproc.feed(sync_request(sync_id))
    lines = inproc.take()
    replies = check_replies(lines)
    assert lines and lines[-1].startswith(b"\xff"), lines[-3:]
    assert replies[-1] == {"return": sync_id}
    assert sum(1 for r in replies if r == {"return": sync_id}) == 1


def _qemu_json(value: Any) -> bool:
    """True when qemu-ga's grammar accepts the encoded request (else there is no id to answer).

    Python writes things QEMU rejects: NaN/Infinity, lone surrogates, Unicode
    noncharacters; the parser alone (a fresh one) decides.
    """
    items = JsonStreamParser().feed(encode(value) + b"\n")
    return len(items) == 1 and isinstance(items[0], dict)


@FUZZ_SETTINGS
@given(reqs=st.lists(requests(), min_size=1, max_size=8), split=st.integers(1, 64))
def test_fuzz_inprocess_ids_in_order(inproc: InProcessAgent, reqs: List[Any], split: int) -> None:
    """Unmutated requests with unique ids: answered in order, at most once, none lost."""
    inproc.take()
    no_reply = {name for name, cmd in inproc.registry.commands.items() if not cmd.success_response}
    data = b""
    expected_ids = []
    must_answer = []
    for i, req in enumerate(reqs):
        if isinstance(req, dict):
            req = dict(req, id=i)
            expected_ids.append(i)
            name = req.get("execute")
            if not (isinstance(name, str) and name in no_reply) and _qemu_json(req):
                must_answer.append(i)
        data += encode(req)
    for pos in range(0, len(data), split):
        inproc.feed(data[pos:pos + split])
    inproc.feed(b"\n")
    replies = check_replies(inproc.take())
    ids = [r["id"] for r in replies if "id" in r]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), ids
    assert set(ids) <= set(expected_ids)
    assert set(must_answer) <= set(ids), (must_answer, ids)


HUGE_INPUTS = [
    b"[" * 5000 + b"]" * 5000,                                       # nesting limit
    b'{"execute": "guest-ping", "id": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"execute": "guest-sync", "arguments": {"id": ' + b"9" * 5000 + b"}}",
    b'{"execute": "guest-sync", "arguments": {"id": 1e999}}',
    b'{"execute": "' + b"a" * (4 << 20) + b'"}',                     # 4 MiB name
    b'{"execute": "guest-ping", "id": "' + b"\xf0\x9f\x98\x80" * (1 << 18) + b'"}',
    b"[" + b"1," * 300000 + b"1]",                                   # many tokens
    b"\xff" * 10000,
    b'{"execute": "guest-ping", "id": "\\ud800\\udc00\\ud800"}',
    b'{"execute": "guest-ping", "id": "\x00\x01\x1f"}',
    b"{'execute': 'guest-ping', 'id': 'single'}",
    b'{"execute": "guest-ping", "id": %}',
    b'{"execute": "guest-file-read", "arguments": {"handle": 18446744073709551616}}',
    b'{"execute": "guest-file-read", "arguments": {"handle": -9223372036854775809}}',
    b'{"execute": "guest-exec", "arguments": {"path": "/bin/true", "arg": ' + b'["x",' * 1000
    + b'"x"' + b"]" * 1000 + b"}}",
    b"}" * 1000 + b"]" * 1000,
    b'"' + b"x" * (1 << 20),                                         # unterminated string
]


@pytest.mark.parametrize("data", HUGE_INPUTS, ids=[f"huge{i}" for i in range(len(HUGE_INPUTS))])
def test_huge_values_inprocess(inproc: InProcessAgent, data: bytes) -> None:
    """Huge, deep, malformed values: each gives well-formed replies; sync answered afterwards."""
    inproc.take()
    inproc.feed(data)
    sync_id = next(_sync_counter)
    inproc.feed(sync_request(sync_id))
    replies = check_replies(inproc.take())
    assert replies[-1] == {"return": sync_id}


def test_token_size_limit_inprocess(inproc: InProcessAgent) -> None:
    """A message over the 64 MiB input cap is refused with QEMU's error, then sync works."""
    inproc.take()
    chunk = b"a" * (1 << 20)
    inproc.feed(b'{"execute": "guest-ping", "id": "')
    for _ in range(65):
        inproc.feed(chunk)
    inproc.feed(b'"}')
    sync_id = next(_sync_counter)
    inproc.feed(sync_request(sync_id))
    replies = check_replies(inproc.take())
    assert {"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}} in replies
    assert replies[-1] == {"return": sync_id}


def test_memory_bounded_inprocess(inproc: InProcessAgent) -> None:
    """Thousands of malformed and valid messages: traced memory does not grow after warm-up."""
    junk = [b'{"execute": "guest-ping", "id": %d}' % i for i in range(50)]
    junk += [b"{\xff", b'{"execute": 1}', b"[[[[", b"]]]]", b'{"execute": "nope", "id": [1,2,3]}',
             b'{"execute": "guest-info"}', b"\"abc", b'{"a": 1e5000}', b"\x00\x01"]

    def round_() -> None:
        for i, item in enumerate(junk * 20):
            inproc.feed(item)
        inproc.feed(sync_request(1))
        inproc.take()

    for _ in range(3):
        round_()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(budget("QGA_FUZZ_MEMORY_ROUNDS", 10, 200)):
            round_()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 512 * 1024, f"traced memory grew by {grown} bytes"


# -- over a socket, against the running agent ---------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_agent() -> Iterator[AgentProcess]:
    """qemu-ga-py with every side-effecting group blocked (fuzzing cannot touch this machine)."""
    proc = start("ours", extra=["--block-groups", SAFE_BLOCK, "--command-timeout", "10"])
    yield proc
    assert proc.stop() == 0, proc.log()


def _read_until_sync(conn: Any, sync_id: int, timeout: float = 30.0) -> List[bytes]:
    lines = []
    deadline = time.monotonic() + timeout
    while True:
        line = conn.read_line(max(0.1, deadline - time.monotonic()))
        lines.append(line)
        if line.startswith(b"\xff") and json.loads(line[1:]).get("return") == sync_id:
            return lines


def _rss_after_idle_trim(pid: int) -> int:
    """RSS once the agent, idle, has dropped its grown input buffer and trimmed the heap.

    Between requests the buffer keeps the size of the biggest message in the burst (a
    bulk file write reuses it), so a snapshot taken mid-burst measures that and not a leak.
    """
    time.sleep(TRIM_DELAY * 2.5)
    return rss_kib(pid)


@FUZZ_SETTINGS
@given(chunks=streams())
def test_fuzz_socket(fuzz_agent: AgentProcess, chunks: List[bytes]) -> None:
    """The same streams over the unix socket: well-formed lines, sync answered, agent alive."""
    conn = fuzz_agent.connect()
    try:
        conn.sync()
        for chunk in chunks:
            conn.send(chunk)
        sync_id = next(_sync_counter)
        conn.send(sync_request(sync_id))
        check_replies(_read_until_sync(conn, sync_id))
    finally:
        conn.close()
    assert fuzz_agent.proc.poll() is None, fuzz_agent.log()


def test_socket_fuzz_memory_bounded(fuzz_agent: AgentProcess) -> None:
    """After the fuzzing above, the agent's RSS stays bounded while more junk arrives."""
    conn = fuzz_agent.connect()
    conn.sync()
    junk = b"".join(HUGE_INPUTS[:4] + HUGE_INPUTS[6:]) + b"\n"
    conn.send(junk)
    conn.sync(1)
    before = _rss_after_idle_trim(fuzz_agent.pid)
    for i in range(budget("QGA_FUZZ_SOCKET_ROUNDS", 5, 100)):
        conn.send(junk)
        conn.sync(i + 2)
    after = _rss_after_idle_trim(fuzz_agent.pid)
    conn.close()
    assert after - before < 8 * 1024, f"RSS grew from {before} to {after} KiB"
