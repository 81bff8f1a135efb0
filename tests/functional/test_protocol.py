"""The protocol over a real socket, as QEMU's tests/unit/test-qga.c drives qemu-ga."""
from __future__ import annotations

import json
import os
import random

import pytest

from tests.agentproc import AgentProcess, start


def test_sync_delimited_skips_the_error_for_our_own_0xff(agent: AgentProcess) -> None:
    conn = agent.connect()
    sync_id = random.randint(0, 2**32 - 1)
    conn.send(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}).encode())
    first = conn.read_line()
    assert first == b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n'
    assert conn.read_line() == b'\xff{"return": %d}\n' % sync_id


def test_sync_echoes_any_int64(agent: AgentProcess) -> None:
    conn = agent.connect()
    for value in (0, -1, 2**63 - 1, -(2**63), 1732550000123):
        assert conn.cmd("guest-sync", id=value) == value


def test_libvirt_handshake_bytes(agent: AgentProcess) -> None:
    conn = agent.connect()
    conn.send(b'{"execute":"guest-sync", "arguments":{"id":1732550000123}}\n')
    assert conn.read_line() == b'{"return": 1732550000123}\n'


def test_single_quotes_several_requests_per_write_and_split_requests(agent: AgentProcess) -> None:
    conn = agent.connect()
    conn.send(b"{'execute':'guest-ping','id':1}{'execute':'guest-ping','id':2}\r\n{'exec")
    assert conn.read_line() == b'{"return": {}, "id": 1}\n'
    assert conn.read_line() == b'{"return": {}, "id": 2}\n'
    conn.send(b"ute':'guest-ping',\n'id':3}")
    assert conn.read_line() == b'{"return": {}, "id": 3}\n'


def test_ids_of_every_type_on_success_and_error(agent: AgentProcess) -> None:
    conn = agent.connect()
    for raw, reply in [
        (b'{"execute":"guest-ping","id":1}', b'{"return": {}, "id": 1}\n'),
        (b'{"execute":"guest-ping","id":0.1}', b'{"return": {}, "id": 0.10000000000000001}\n'),
        (b'{"execute":"guest-ping","id":{"a":[null,true]}}', b'{"return": {}, "id": {"a": [null, true]}}\n'),
        (b'{"execute":"guest-ping","id":"\xc3\xa9"}', b'{"return": {}, "id": "\\u00E9"}\n'),
        (b'{"execute":"nope","id":7}',
         b'{"id": 7, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\n'),
        (b'{"exec-oob":"guest-ping","id":7}',
         b'{"id": 7, "error": {"class": "GenericError", "desc": "QMP input member \'exec-oob\' is unexpected"}}\n'),
        (b'{"execute":"guest-ping","arguments":{"foo":42}}',
         b'{"error": {"class": "GenericError", "desc": "Parameter \'foo\' is unexpected"}}\n'),
   
        # Beyond the double range: the client's own text (qemu-ga prints inf, not JSON).
        (b'{"execute":"guest-ping","id":-1e400}', b'{"return": {}, "id": -1e400}\n'),
        (b'{"execute":"nope","id":[1E+999]}',
         b'{"id": [1E+999], "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\n'),
    ]:
        conn.send(raw)
        assert conn.read_line() == reply, raw


def test_info_lists_every_registered_command_newest_first(agent: AgentProcess) -> None:
    info = agent.connect().cmd("guest-info")
    assert info["version"] == "10.2.0"
    names = [c["name"] for c in info["supported_commands"]]
    assert names[-3:] == ["guest-ping", "guest-sync", "guest-sync-delimited"]
    assert all(list(c) == ["enabled", "name", "success-response"] for c in info["supported_commands"])


def test_parser_state_survives_a_reconnect(agent: AgentProcess) -> None:
    conn = agent.connect()
    conn.send(b'{"execute":"guest-ping","id":"pa')
    conn.close()
    conn = agent.connect()
    conn.send(b'rtial"}\n')
    assert conn.read_line() == b'{"return": {}, "id": "partial"}\n'


def test_second_client_waits_until_the_first_leaves(agent: AgentProcess) -> None:
    first = agent.connect()
    first.sync()
    second = agent.connect()
    second.send(b'{"execute":"guest-ping","id":2}')
    # Two round trips on the first client: a loop serving both would have read the
    # second's ping (queued before them) by then and answered it.  No timed silence.
    assert first.cmd("guest-ping") == {} and first.cmd("guest-ping") == {}
    second.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        second.sock.recv(1)
    second.sock.settimeout(second.timeout)
    first.close()
    assert second.read_line() == b'{"return": {}, "id": 2}\n'


@pytest.mark.parametrize("flag", ["-b", "-a"])
def test_blocked_and_allowed_rpcs(flag: str, agent_dir: str) -> None:
    proc = start("ours", extra=[flag, "guest-ping,guest-get-time"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        reply = conn.request({"execute": "guest-ping"})
        if flag == "-b":
            names = {c["name"]: c["enabled"] for c in conn.cmd("guest-info")["supported_commands"]}
            assert reply["error"] == {"class": "CommandNotFound", "desc":
                                      "Command guest-ping has been disabled: the command is not allowed"}
            assert names["guest-ping"] is False and names["guest-info"] is True
        else:
            assert reply == {"return": {}}
            assert conn.request({"execute": "guest-info"})["error"]["class"] == "CommandNotFound"
    finally:
        assert proc.stop() == 0


def test_state_file_created_and_nothing_else_left_behind(agent: AgentProcess) -> None:
    agent.connect().sync()
    with open(os.path.join(agent.tmpdir, "qga.state")) as f:
        assert f.read() == "[global]\nfd_counter=1000\n"
    assert not os.path.exists(os.path.join(agent.tmpdir, "qga.state.isfrozen"))


def test_frozen_marker_at_start_means_frozen_mode(agent_dir: str) -> None:
    open(os.path.join(agent_dir, "qga.state.isfrozen"), "w").close()
    proc = start("ours", tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        enabled = {c["name"] for c in conn.cmd("guest-info")["supported_commands"] if c["enabled"]}
        assert enabled <= {"guest-ping", "guest-info", "guest-sync", "guest-sync-delimited",
                           "guest-fsfreeze-status", "guest-fsfreeze-thaw"}
        assert "guest-ping" in enabled
        # Said once, before the gate closes: the one line an administrator needs.
        assert "previous instance appears to have exited with frozen filesystems" in proc.log()
    finally:
        assert proc.stop() == 0


def test_frozen_mode_overrides_the_block_and_allow_lists(agent_dir: str) -> None:
    """qemu-ga 10.2: while frozen the freeze-safe set is enabled whatever -b/-a/groups say,
    so the host can always see and end the freeze; after the thaw the lists apply again."""
    open(os.path.join(agent_dir, "qga.state.isfrozen"), "w").close()
    proc = start("ours", tmpdir=agent_dir,
                 extra=["-b", "guest-ping,guest-fsfreeze-status", "-a", "guest-info,guest-ping",
                        "--block-groups", "fsfreeze"])
    frozen_safe = {"guest-ping", "guest-info", "guest-sync", "guest-sync-delimited",
                   "guest-fsfreeze-status", "guest-fsfreeze-thaw"}
    try:
        conn = proc.connect()
        conn.sync()
        enabled = {c["name"] for c in conn.cmd("guest-info")["supported_commands"] if c["enabled"]}
        assert enabled == frozen_safe
        assert conn.cmd("guest-ping") == {}
        assert conn.cmd("guest-fsfreeze-status") == "frozen"
        conn.cmd("guest-fsfreeze-thaw")  # its count depends on this machine's other freezes
        enabled = {c["name"] for c in conn.cmd("guest-info")["supported_commands"] if c["enabled"]}
        assert enabled == {"guest-info"}  # the lists again
        assert conn.request({"execute": "guest-ping"})["error"]["desc"] == \
            "Command guest-ping has been disabled: the command is not allowed"
    finally:
        assert proc.stop() == 0
