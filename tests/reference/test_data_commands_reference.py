"""Our replies compared byte for byte with the system qemu-ga (Debian 7.2).

Both agents get the same raw requests on the same files (and, as root, the
same loop mount).  Only freeze-list with the test mount is used: a plain
guest-fsfreeze-freeze on the real agent would freeze this machine.  Where
7.2 and 10.2 differ (section 6 of the spec) we implement 10.2; those cases
are listed in KNOWN_DIFFERENCES and checked against the 10.2 text instead.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Iterator, List, Tuple

import pytest

from tests import loopmount
from tests.agentproc import AgentProcess, Conn, start

pytestmark = pytest.mark.reference

HELLO = base64.b64encode(b"Hello World!\n\0").decode()


@pytest.fixture
def shared_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="qga-ref-data-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(kind: str, requests: List[str], workdir: str) -> List[bytes]:
    """Send each raw request (after a sync) and collect the raw reply lines."""
    agent: AgentProcess = start(kind)
    try:
        conn: Conn = agent.connect(timeout=30)
        conn.sync()
        replies = []
        for req in requests:
            conn.send(req.replace("@DIR@", workdir).encode() + b"\n")
            replies.append(conn.read_line())
        return replies
    finally:
        agent.stop()


def _both(requests: List[str], shared_dir: str) -> Tuple[List[bytes], List[bytes]]:
    ref_dir = os.path.join(shared_dir, "ref")
    our_dir = os.path.join(shared_dir, "ours")
    os.mkdir(ref_dir)
    os.mkdir(our_dir)
    for d in (ref_dir, our_dir):
        with open(os.path.join(d, "data"), "wb") as f:
            f.write(b"0123456789" * 1000)
    ref = _run("reference", requests, ref_dir)
    ours = _run("ours", requests, our_dir)
    return ref, [line.replace(our_dir.encode(), ref_dir.encode()) for line in ours]


FILE_REQUESTS = [
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/foo","mode":"w+"}}',
    '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"%s"}}' % HELLO,
    '{"execute":"guest-file-read","arguments":{"handle":1000}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":"set"}}',
    '{"execute":"guest-file-read","arguments":{"handle":1000}}',
    '{"execute":"guest-file-read","arguments":{"handle":1000}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":6,"whence":0}}',
    '{"execute":"guest-file-read","arguments":{"handle":1000,"count":3}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":-2,"whence":2}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":-100,"whence":"cur"}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":5}}',
    '{"execute":"guest-file-read","arguments":{"handle":1000,"count":-1}}',
    '{"execute":"guest-file-read","arguments":{"handle":1000,"count":50331649}}',
    '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"a b"}}',
    '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"SGVsbG8","count":4}}',
    '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"SGVsbG8=","count":2}}',
    '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"AB=C\\nSG=="}}',
    '{"execute":"guest-file-flush","arguments":{"handle":1000}}',
    '{"execute":"guest-file-close","arguments":{"handle":1000}}',
    '{"execute":"guest-file-close","arguments":{"handle":1000}}',
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/data","mode":"r"}}',
    '{"execute":"guest-file-read","arguments":{"handle":1001,"count":10000}}',
    '{"execute":"guest-file-read","arguments":{"handle":1001,"count":0}}',
    '{"execute":"guest-file-write","arguments":{"handle":1001,"buf-b64":"QQ=="}}',
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/missing","mode":"r"}}',
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/data","mode":"rw"}}',
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@","mode":"r"}}',
    '{"execute":"guest-file-read","arguments":{"handle":1002}}',
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/new","mode":"a+"}}',
    '{"execute":"guest-file-write","arguments":{"handle":1003,"buf-b64":"QUJD"}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1003,"offset":0,"whence":"set"}}',
    '{"execute":"guest-file-read","arguments":{"handle":1003}}',
    '{"execute":"guest-file-seek","arguments":{"handle":1003,"offset":0,"whence":true}}',
    '{"execute":"guest-file-read","arguments":{"handle":99}}',
]


def test_file_commands_match_reference(shared_dir: str) -> None:
    ref, ours = _both(FILE_REQUESTS, shared_dir)
    for req, r, o in zip(FILE_REQUESTS, ref, ours):
        assert o == r, f"{req}\n reference: {r!r}\n ours:      {o!r}"
    for name in ("foo", "new"):
        assert open(os.path.join(shared_dir, "ours", name), "rb").read() == \
            open(os.path.join(shared_dir, "ref", name), "rb").read()
        assert os.stat(os.path.join(shared_dir, "ours", name)).st_mode == \
            os.stat(os.path.join(shared_dir, "ref", name)).st_mode


EXEC_CASES = [
    ("echo", ["-n", '" test_str "'], True),
    ("sh", ["-c", "echo out; echo err >&2; exit 3"], True),
    ("sh", ["-c", "kill -9 $$"], True),
    ("sh", ["-c", "echo hidden; exit 4"], False),
    ("cat", [], True),
]


def _exec_status(conn: Conn, path: str, args: List[str], capture: bool) -> bytes:
    arguments = {"path": path, "arg": args, "capture-output": capture}
    if path == "cat":
        arguments["input-data"] = base64.b64encode(b"from stdin\n").decode()
    pid = conn.cmd("guest-exec", **{k.replace("-", "_"): v for k, v in arguments.items()})["pid"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn.send(json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}}).encode() + b"\n")
        line = conn.read_line()
        if b'"exited": true' in line:
            return line
        time.sleep(0.01)
    raise AssertionError("child did not finish")


def test_exec_status_matches_reference() -> None:
    results = {}
    for kind in ("reference", "ours"):
        agent = start(kind)
        try:
            conn = agent.connect(timeout=30)
            conn.sync()
            results[kind] = [_exec_status(conn, *case) for case in EXEC_CASES]
            conn.send(b'{"execute":"guest-exec","arguments":{"path":"/bin/invalid-cmd42"}}\n')
            results[kind].append(conn.read_line())
            conn.send(b'{"execute":"guest-exec-status","arguments":{"pid":0}}\n')
            results[kind].append(conn.read_line())
        finally:
            agent.stop()
    ref, ours = results["reference"], results["ours"]
    assert ours[:len(EXEC_CASES)] == ref[:len(EXEC_CASES)]
    # Known differences: we implement 10.2's texts (see the module docstring).
    glib = "Failed to execute child process \u201c/bin/invalid-cmd42\u201d (No such file or directory)"
    assert json.loads(ref[-2])["error"]["desc"] == f"Guest agent command failed, error was '{glib}'"
    assert json.loads(ours[-2])["error"]["desc"] == glib
    assert json.loads(ref[-1])["error"]["desc"] == "Invalid parameter 'pid'"
    assert json.loads(ours[-1])["error"]["desc"] == "PID 0 does not exist"  # 10.2: "PID ld ..." (bug)


# -- U+0000 inside request strings -------------------------------------------------------
#: QEMU's parser keeps U+0000 as modified UTF-8 (C0 80): the OS gets those bytes, not a
#: string cut at the NUL.
NUL_REQUESTS = [
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/f-nul\\u0000ignored","mode":"w"}}',
    '{"execute":"guest-file-open","arguments":{"path":"@DIR@/g","mode":"w\\u0000x"}}',
    '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"QUJD\\u0000QUJD"}}',
    '{"execute":"guest-file-close","arguments":{"handle":1000}}',
    '{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c",'
    '"printf %s \\"$1\\" > @DIR@/argv; printf %s \\"$K\\" > @DIR@/env","sh","a\\u0000b"],'
    '"env":["K=v\\u0000w"]}}',
]


def test_nul_in_strings_reaches_the_os_as_c0_80(shared_dir: str) -> None:
    outcome = {}
    for kind in ("reference", "ours"):
        workdir = os.path.join(shared_dir, kind)
        os.mkdir(workdir)
        replies = _run(kind, NUL_REQUESTS, workdir)
        for name in ("argv", "env"):  # the child of guest-exec writes these
            path = os.path.join(workdir, name)
            deadline = time.monotonic() + 30
            while not (os.path.exists(path) and os.path.getsize(path)) and time.monotonic() < deadline:
                time.sleep(0.02)
        files = {os.fsencode(n): open(os.path.join(workdir, n), "rb").read() for n in os.listdir(workdir)}
        outcome[kind] = (replies[:4], files)
    assert outcome["ours"] == outcome["reference"]
    replies, files = outcome["ours"]
    assert files == {b"f-nul\xc0\x80ignored": b"", b"argv": b"a\xc0\x80b", b"env": b"v\xc0\x80w"}
    assert replies[1] == (b'{"error": {"class": "GenericError", "desc": '
                          b'"invalid file open mode \'w\\u0000x\'"}}\n')
    assert replies[2] == (b'{"error": {"class": "GenericError", "desc": '
                          b'"Base64 data contains invalid characters"}}\n')


# -- freeze on a loop mount (root) -------------------------------------------------------
@pytest.fixture
def loop_mount() -> Iterator[str]:
    with loopmount.loop_mount(64, prefix="qga-ref-mnt-") as (_dev, mnt):
        yield mnt


@pytest.mark.root
def test_freeze_list_matches_reference(loop_mount: str) -> None:
    requests = [
        '{"execute":"guest-fsfreeze-status"}',
        '{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/nonexistent"]}}',
        '{"execute":"guest-fsfreeze-status"}',
        '{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":[]}}',
        '{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["@MNT@","@MNT@"]}}',
        '{"execute":"guest-fsfreeze-status"}',
        '{"execute":"guest-file-open","arguments":{"path":"/etc/hostname"}}',
        '{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["@MNT@"]}}',
        '{"execute":"guest-fsfreeze-thaw"}',
        '{"execute":"guest-fsfreeze-status"}',
        '{"execute":"guest-fsfreeze-thaw"}',
        '{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":"x"}}',
        # U+0000 reaches qemu-ga as C0 80: the name matches no mount, nothing is frozen.
        '{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["@MNT@\\u0000junk"]}}',
        '{"execute":"guest-fsfreeze-status"}',
    ]
    replies = {}
    for kind in ("reference", "ours"):
        agent = start(kind)
        try:
            conn = agent.connect(timeout=30)
            conn.sync()
            out = []
            for req in requests:
                conn.send(req.replace("@MNT@", loop_mount).encode() + b"\n")
                out.append(conn.read_line())
            replies[kind] = out
        finally:
            subprocess.run(["fsfreeze", "-u", loop_mount], capture_output=True)
            agent.stop(9 if kind == "reference" else 15)
    ref, ours = replies["reference"], replies["ours"]
    for i, (req, r, o) in enumerate(zip(requests, ref, ours)):
        if i in (6, 7):  # disabled while frozen: 7.2's suffix differs from 10.2's
            assert re.sub(rb": the [a-z ]+\"", b'"', o) == re.sub(rb": the [a-z ]+\"", b'"', r)
            assert b"the command is not allowed" in o
            continue
        assert o == r, f"{req}\n reference: {r!r}\n ours:      {o!r}"


# Big guest-file-write strings (beyond the lexer's 4 KiB "big string" size,
# where canonical base64 takes its SIMD shortcut): clean, and spoiled in every
# way the shortcut must notice.  Raw bytes, not str: some are not UTF-8.
_BIG = base64.b64encode(bytes(range(256)) * 300)          # 102400 characters
_BIG_WRITES: List[bytes] = [
    _BIG,
    _BIG[:5000] + b"\\/" + _BIG[5000:],                          # an escape, still valid
    b"\\n".join(_BIG[i:i + 76] for i in range(0, len(_BIG), 76)),  # escaped newlines
    _BIG[:-1],                                                   # a partial last group
    _BIG[:8000] + b"====" + _BIG[8000:],                         # padding in the middle
    _BIG[:8000] + b"\\u0000" + _BIG[8000:],
    _BIG[:8000] + b"\xc3(" + _BIG[8000:],                        # invalid UTF-8
    _BIG[:8000] + b"\xc3\xa9" + _BIG[8000:],                     # valid UTF-8, not base64
    _BIG[:8000] + b" " + _BIG[8000:],
    _BIG[:90000] + b"\x01" + _BIG[90000:],                       # a control byte: lexical error
    _BIG,
]


def _big_session(kind: str, workdir: str) -> Tuple[bytes, bytes, bytes]:
    """(replies to the writes, what a client arriving after one that left in
    the middle of a big string reads, the file written)."""
    agent: AgentProcess = start(kind)
    path = os.path.join(workdir, "big")
    try:
        conn: Conn = agent.connect(timeout=30)
        conn.sync()
        conn.send(b'{"execute":"guest-file-open","arguments":{"path":"%s","mode":"w"}}\n' % path.encode())
        for text in _BIG_WRITES:
            conn.send(b'{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"' + text + b'"}}\n')
        replies = conn.sync()
        conn.send(b'{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"' + _BIG[:50000])
        conn.close()
        conn = agent.connect(timeout=30)
        resync = conn.sync()
        conn.send(b'{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"' + _BIG + b'"}}\n')
        conn.send(b'{"execute":"guest-file-close","arguments":{"handle":1000}}\n')
        resync += conn.sync(4343)
        with open(path, "rb") as f:
            return replies, resync, f.read()
    finally:
        agent.stop()


def test_big_file_writes_match_reference(shared_dir: str) -> None:
    ref = _big_session("reference", shared_dir)
    ours = _big_session("ours", shared_dir)
    assert ours[0].count(b"\n") >= len(_BIG_WRITES) + 1
    for what, o, r in zip(("replies", "after reconnect", "file"), ours, ref):
        assert o == r, f"{what} differ:\n ours {o[:300]!r}...\n ref  {r[:300]!r}..."
