"""Extension keys set in the config file or on the command line take effect in a running agent.

``interface-exclude`` hides an interface from guest-network-get-interfaces and
``file-nofollow`` makes guest-file-open refuse a final symlink; the same agent
without them shows the interface and follows the link.
"""
from __future__ import annotations

import os
from typing import List

import pytest

from tests.agentproc import start

KEYS = {"file": lambda conf: ["-c", conf], "cli": lambda conf: ["--interface-exclude", "l?", "--file-nofollow"]}


def _names(conn) -> List[str]:
    return [i["name"] for i in conn.cmd("guest-network-get-interfaces")]


@pytest.mark.parametrize("how", sorted(KEYS))
def test_interface_exclude_and_file_nofollow_take_effect(how: str, tmp_path) -> None:
    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\ninterface-exclude=l?\nfile-nofollow=true\n")
    target = tmp_path / "target.txt"
    target.write_text("hello")
    link = tmp_path / "link.txt"
    os.symlink(target, link)
    for extra, configured in (([], False), (KEYS[how](str(conf)), True)):
        workdir = tmp_path / ("set" if configured else "plain")
        workdir.mkdir()
        proc = start("ours", extra=extra, tmpdir=str(workdir), env={"QGA_CONF": str(tmp_path / "absent")})
        try:
            conn = proc.connect()
            conn.sync()
            assert ("lo" in _names(conn)) is not configured
            reply = conn.request({"execute": "guest-file-open", "arguments": {"path": str(link)}})
            if configured:
                assert reply == {"error": {"class": "GenericError", "desc": (
                    f"failed to open file '{link}' (mode: 'r'): Too many levels of symbolic links")}}
            else:
                assert conn.cmd("guest-file-read", handle=reply["return"])["buf-b64"] == "aGVsbG8="
        finally:
            assert proc.stop() == 0, proc.log()
