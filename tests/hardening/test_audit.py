"""Audit log: one structured record per side-effecting command, never secrets (issue 8).

Records go to the ``qga.audit`` logger (always on, whatever ``-v``); with
``-l FILE`` they are lines ``<time>: info: audit: <command> command=... <args>
result='ok'|'error' [error=...]``; under journald each field becomes
``QGA_<NAME>`` (tested with a fake journal module: journald does not run on
this CI machine).
"""
from __future__ import annotations

import base64
import logging
import os
import re
from typing import Any, Dict, List

from qga.logformat import JournalHandler
from qga.commands import load
from qga.registry import Registry
from tests.agentproc import start

SECRET = "S3cr3t-Do-Not-Log-7f1e"

#: Commands of side-effecting groups that are deliberately not audited: reads
#: and per-chunk I/O on an already audited handle, and status queries.  A new
#: command in those groups must be audit=True or be added here on purpose.
NOT_AUDITED = {"guest-file-read", "guest-file-write", "guest-file-seek", "guest-file-flush",
               "guest-fsfreeze-status", "guest-exec-status", "guest-ssh-get-authorized-keys"}


def test_side_effecting_commands_are_declared_audited() -> None:
    registry = Registry(load())
    missing = [name for name, cmd in registry.commands.items()
               if cmd.group not in ("protocol", "info") and not cmd.audit and name not in NOT_AUDITED]
    assert not missing, f"side-effecting commands without audit=True: {missing}"


def _audit_lines(log_text: str) -> List[str]:
    return [line for line in log_text.splitlines() if ": info: audit: " in line]


def _fields(line: str) -> Dict[str, str]:
    return dict(re.findall(r" (\w+)=('[^']*'|\"[^\"]*\"|\[[^\]]*\]|\S+)", line.split(": info: audit: ", 1)[1]))


def test_audit_records_in_log_file(agent_dir: str) -> None:
    logfile = os.path.join(agent_dir, "qga.log")
    proc = start("ours", extra=["-l", logfile], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        target = os.path.join(agent_dir, "written.txt")
        data = base64.b64encode(SECRET.encode()).decode()
        handle = conn.cmd("guest-file-open", path=target, mode="w")
        conn.cmd("guest-file-write", handle=handle, buf_b64=data)
        conn.cmd("guest-file-close", handle=handle)
        missing = conn.request({"execute": "guest-file-open",
                                "arguments": {"path": os.path.join(agent_dir, "nope", "x")}})
        assert "error" in missing
        pid = conn.cmd("guest-exec", path="/bin/cat", arg=["-"], env=[f"TOKEN={SECRET}"],
                       input_data=data, capture_output=True)["pid"]
        while not conn.cmd("guest-exec-status", pid=pid)["exited"]:
            pass
        conn.request({"execute": "guest-set-user-password",
                      "arguments": {"username": "qga-no-such-user-x", "password": data, "crypted": False}})
        conn.request({"execute": "guest-ssh-add-authorized-keys",
                      "arguments": {"username": "qga-no-such-user-x", "keys": [f"ssh-ed25519 {SECRET}"]}})
        conn.cmd("guest-ping")
        conn.sync()
        conn.close()
    finally:
        assert proc.stop() == 0, proc.log()
    with open(logfile, encoding="utf-8") as f:
        text = f.read()
    assert SECRET not in text and data not in text, "a secret reached the log"
    lines = _audit_lines(text)
    names = [line.split(": info: audit: ", 1)[1].split()[0] for line in lines]
    assert names == ["guest-file-open", "guest-file-close", "guest-file-open", "guest-exec",
                     "guest-set-user-password", "guest-ssh-add-authorized-keys"], lines
    opened, closed, failed, execd, passwd, ssh = (_fields(line) for line in lines)
    assert opened["path"] == repr(target) and opened["mode"] == "'w'" and opened["result"] == "'ok'"
    assert opened["handle"] == str(handle)
    assert closed["handle"] == str(handle) and closed["result"] == "'ok'"
    assert failed["result"] == "'error'" and "No such file or directory" in failed["error"]
    assert execd["path"] == "'/bin/cat'" and execd["arg"] == "['-']" and execd["result"] == "'ok'"
    assert execd["pid"] == str(pid)
    assert execd["withheld"] == "'env,input_data'", execd
    assert passwd["username"] == "'qga-no-such-user-x'" and passwd["withheld"] == "'password'"
    assert passwd["result"] == "'error'"
    assert ssh["withheld"] == "'keys'" and ssh["result"] == "'error'"


class _FakeJournal:
    def __init__(self) -> None:
        self.sent: List[Dict[str, Any]] = []

    def send(self, message: str, **fields: Any) -> None:
        self.sent.append(dict(fields, MESSAGE=message))


def test_audit_record_as_journald_fields() -> None:
    """Under journald each audit field is a QGA_* journal field (journald is not running here)."""
    from qga.dispatch import audit_record

    journal = _FakeJournal()
    handler = JournalHandler(journal)
    logger = logging.getLogger("qga.audit")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        cmd = Registry(load()).commands["guest-exec"]
        audit_record(cmd, {"path": "/bin/true", "arg": ["x"], "input_data": "c2VjcmV0"}, "ok",
                     extra={"pid": 42})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    (entry,) = journal.sent
    assert entry["MESSAGE"] == "audit: guest-exec"
    assert entry["QGA_COMMAND"] == "guest-exec" and entry["QGA_PATH"] == "/bin/true"
    assert entry["QGA_PID"] == "42" and entry["QGA_RESULT"] == "ok"
    assert entry["QGA_WITHHELD"] == "input_data" and "c2VjcmV0" not in repr(entry)
    assert entry["SYSLOG_IDENTIFIER"] == "qemu-ga-py" and entry["PRIORITY"] == "6"
