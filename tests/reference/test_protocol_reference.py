"""The same bytes sent to the system qemu-ga (7.2) and to qemu-ga-py: same replies.

Where 10.2 (what we implement) differs from 7.2, the difference is listed in
DELIBERATE with our expected reply, and README.md names it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.agentproc import REFERENCE_QGA, AgentProcess, start

pytestmark = pytest.mark.reference
REPO = Path(__file__).resolve().parents[2]

# Requests whose reply is decided before any handler runs (request shape, lookup,
# argument validation) or by a side-effect-free handler.
CORPUS: List[bytes] = [
    b'{"execute":"guest-ping"}', b'{"execute":"guest-ping","id":1}', b"[]", b"42", b'"str"', b"null",
    b"{}", b'{"arguments":{}}', b'{"execute":5}', b'{"execute":"guest-ping","arguments":[]}',
    b'{"execute":"guest-ping","arguments":null,"id":"n"}', b'{"execute":"guest-ping","foo":1,"id":{"a":1}}',
    b'{"exec-oob":"guest-ping"}', b'{"execute":"guest-invalid-cmd","id":[1,2]}',
    b'{"execute":"guest-ping","arguments":{"foo":42}}', b'{"execute":"guest-sync"}',
    b'{"execute":"guest-sync","arguments":{"id":"5"}}', b'{"execute":"guest-sync","arguments":{"id":1.5}}',
    b'{"execute":"guest-sync","arguments":{"id":18446744073709551615}}',
    b'{"execute":"guest-sync","arguments":{"id":true}}', b'{"execute":"guest-sync","arguments":{"id":-9}}',
    b'{"execute":"guest-sync","arguments":{"id":9223372036854775807},"id":-1}',
    b'{"execute":"guest-sync","arguments":{"id":1,"x":2,"y":3,"aa":4}}',
    b"{'execute':'guest-ping','id':'single'}",
    b'{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":"bogus"}}',
    b'{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":true}}',
    b'{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":1.5}}',
    b'{"execute":"guest-file-seek","arguments":{"handle":1,"whence":1}}',
    b'{"execute":"guest-file-read","arguments":{"count":1}}',
    b'{"execute":"guest-file-read","arguments":{"handle":"x"}}',
    b'{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0}]}}',
    b'{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0,"online":true,"x":1}]}}',
    b'{"execute":"guest-set-vcpus","arguments":{"vcpus":{}}}',
    b'{"execute":"guest-exec","arguments":{"path":"x","arg":["a",1]}}',
    b'{"execute":"guest-exec","arguments":{"path":1}}',
    b'{"execute":"guest-exec","arguments":{"path":"x","capture-output":"merged","bogus":1}}',
    b'{"execute":"guest-set-memory-blocks","arguments":{"mem-blks":[{"phys-index":"x","online":true}]}}',
    b'{"execute":"guest-set-user-password","arguments":{"username":"u","password":"cA=="}}',
    b'{"execute":"guest-ssh-add-authorized-keys","arguments":{"username":"u","keys":"k"}}',
    b'{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":[1]}}',
    b'{"execute":"guest-fstrim","arguments":{"minimum":"0"}}',
    b'{"execute":"guest-fsfreeze-status"}',
    b'{"execute":"guest-exec-status","arguments":{}}',
    b'{"execute":"guest-get-host-name","arguments":{"x":1}}',
]

#: Request -> (our reply, why it differs from 7.2).
DELIBERATE: Dict[bytes, tuple] = {
    b'{"execute":"guest-exec","arguments":{"path":"x","capture-output":"merged","bogus":1}}': (
        b'{"error": {"class": "GenericError", "desc": "Parameter \'bogus\' is unexpected"}}\n',
        "capture-output accepts the 8.0+ enum; 7.2 only takes a boolean"),
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    ref = start("reference", tmpdir=str(tmp_path_factory.mktemp("ref")))
    ours = start("ours", tmpdir=str(tmp_path_factory.mktemp("ours")))
    yield ref.connect(), ours.connect()
    ref.stop()
    assert ours.stop() == 0


@pytest.mark.parametrize("request_bytes", CORPUS, ids=[c.decode(errors="replace")[:60] for c in CORPUS])
def test_same_reply(pair, request_bytes: bytes) -> None:
    ref, ours = pair
    ref.send(request_bytes + b"\n")
    ours.send(request_bytes + b"\n")
    theirs, mine = ref.read_line(), ours.read_line()
    if request_bytes in DELIBERATE:
        expected, _why = DELIBERATE[request_bytes]
        assert mine == expected
        assert theirs != mine
    else:
        assert mine == theirs


def test_cascades_and_resync_bytes(pair) -> None:
    """Malformed input gives the same sequence of error replies, then both resync."""
    ref, ours = pair
    for raw in [b'{"execute":"guest-ping","id":True}', b'{"execute":"guest-ping","id":01}',
                b'{"execute" "guest-ping"}', b'\x01', b'"tab\there"', b'{"a":1,"a":2}', b'"\\ud800"']:
        results = []
        for conn in pair:
            conn.send(raw + b"\n")
            results.append(conn.sync())
        # Every input here is malformed: each agent answers with at least one error.
        assert b'"error"' in results[1], raw
        assert results[0] == results[1], raw


def _dump(argv: List[str], binary: List[str]) -> List[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "QGA_CONF": "/nonexistent"}
    out = subprocess.run(binary + argv, capture_output=True, text=True, env=env, timeout=30)
    return out.stdout.splitlines()


@pytest.mark.parametrize("argv", [
    ["-D"], ["-D", "-b", "guest-ping,guest-info", "-b", "x", "-F/foo", "-l", "/tmp/l"],
    ["-D", "-m", "unix-listen", "-p", "/s", "-v", "-r", "-d", "-t", "/st", "-f", "/p"], ["-D", "-F"],
])
def test_dump_conf_matches_for_qemu_keys(argv: List[str]) -> None:
    theirs = _dump(argv, [REFERENCE_QGA])
    mine = _dump(argv, [sys.executable, "-m", "qga"])
    assert theirs, "reference printed nothing"
    assert mine == theirs + ["allow-rpcs="]  # 8.1+ adds allow-rpcs; nothing else differs
