"""Hypothesis strategies for structure-aware fuzzing of the request path.

A request is built from the real command table (names and argument names
read from the registry), with values of every JSON type including huge
integers, non-finite floats, long and non-ASCII strings; its encoding is
then optionally mutated: truncated, cut, 0xFF bytes and random bytes
inserted, bytes flipped, ranges duplicated.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from hypothesis import strategies as st

from tests.hardening.inproc import arg_members, safe_commands

_COMMANDS = {cmd.name: arg_members(cmd) for cmd in safe_commands()}
COMMAND_NAMES = sorted(_COMMANDS)
#: Argument names of every command plus secrets and names no command has.
ARG_POOL = sorted({a for members in _COMMANDS.values() for a in members}
                  | {"id", "password", "username", "keys", "time", "vcpus", "mem-blks", "reset",
                     "crypted", "mode", "pid", "x", ""})

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(1 << 64), max_value=1 << 64),
    st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
    st.sampled_from([0, -1, 1 << 63, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1, 1 << 64, 10 ** 400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                   blacklist_categories=()), max_size=10),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.sampled_from(ARG_POOL) | st.text(max_size=8),
                                               children, max_size=5)),
    max_leaves=25)


@st.composite
def requests(draw: Any) -> Any:
    """One request object (occasionally not an object at all)."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    req: Dict[str, Any] = {}
    name = draw(st.one_of(st.sampled_from(COMMAND_NAMES), st.text(max_size=30), json_values)
                if draw(st.integers(0, 9)) == 0 else st.sampled_from(COMMAND_NAMES))
    if draw(st.integers(0, 29)):
        req["execute"] = name
    members = _COMMANDS.get(name, []) if isinstance(name, str) else []
    if draw(st.booleans()):
        args: Any = {}
        for member in members:
            if draw(st.integers(0, 3)):
                args[member] = draw(json_values)
        if draw(st.integers(0, 4)) == 0:
            args[draw(st.sampled_from(ARG_POOL))] = draw(json_values)
        if draw(st.integers(0, 19)) == 0:
            args = draw(json_values)
        req["arguments"] = args
    if draw(st.booleans()):
        req["id"] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        req[draw(st.text(max_size=10))] = draw(json_values)
    return req


def encode(value: Any, ascii_only: bool = True) -> bytes:
    """JSON text of ``value`` (NaN/Infinity as Python writes them: rejected by qemu-ga)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """``data`` with up to four random mutations."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(buf)))
        if op == 0:
            del buf[pos:]                                   # truncate
        elif op == 1:
            buf[pos:pos] = b"\xff"                          # resync byte
        elif op == 2:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 3 and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))        # bit flip
        elif op == 4:
            end = draw(st.integers(pos, len(buf)))
            buf[pos:pos] = buf[pos:end]                     # duplicate a range
        elif op == 5:
            buf[pos:pos] = draw(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"'", b"\\", b"\n",
                                                 b"\x00", b"\xc0\x80", b"\xed\xa0\x80"]))
        elif op == 6:
            end = draw(st.integers(pos, len(buf)))
            del buf[pos:end]                                # cut a range
    return bytes(buf)


@st.composite
def streams(draw: Any, max_requests: int = 6) -> List[bytes]:
    """Chunks as a channel delivers them: mutated requests, split at random points."""
    parts = []
    for _ in range(draw(st.integers(1, max_requests))):
        raw = encode(draw(requests()), ascii_only=draw(st.booleans()))
        if draw(st.integers(0, 2)) == 0:
            raw = draw(mutated(raw))
        parts.append(raw + draw(st.sampled_from([b"", b"\n", b" ", b"\r\n"])))
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    chunks, last = [], 0
    for cut in cuts + [len(data)]:
        chunks.append(data[last:cut])
        last = cut
    return chunks
