"""guest-ssh-* for a real throwaway user, through the running agent, side by
side with the system qemu-ga; and the symlink attack qemu-ga falls for.

The user is created with useradd and removed with ``userdel -r`` even when a
test fails.  Passwords are never changed: guest-set-user-password is only
called for a user that does not exist.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from typing import Iterator

import pytest

from tests.agentproc import AgentProcess, start

pytestmark = pytest.mark.root

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 one@example"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey2 two@example"


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    name = "qgat" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(params=["ours", "reference"])
def any_agent(request: pytest.FixtureRequest) -> Iterator[AgentProcess]:
    proc = start(request.param)
    yield proc
    proc.stop()


def _keys_path(pw: pwd.struct_passwd) -> str:
    return os.path.join(pw.pw_dir, ".ssh", "authorized_keys")


def test_add_get_remove(any_agent: AgentProcess, user: pwd.struct_passwd) -> None:
    """Both agents produce the same files and replies for the same requests."""
    conn = any_agent.connect()
    name = user.pw_name
    assert conn.cmd("guest-ssh-add-authorized-keys", username=name, keys=[KEY1]) == {}
    assert conn.cmd("guest-ssh-add-authorized-keys", username=name, keys=[KEY2, KEY1], reset=False) == {}
    path = _keys_path(user)
    with open(path) as f:
        assert f.read() == f"{KEY1}\n{KEY2}"
    st, dst = os.stat(path), os.stat(os.path.dirname(path))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o600)
    assert (dst.st_uid, dst.st_gid, dst.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o700)
    assert conn.cmd("guest-ssh-get-authorized-keys", username=name) == {"keys": [KEY2, KEY1]}
    assert conn.cmd("guest-ssh-remove-authorized-keys", username=name, keys=[KEY1]) == {}
    assert conn.cmd("guest-ssh-get-authorized-keys", username=name) == {"keys": [KEY2]}
    assert conn.cmd("guest-ssh-add-authorized-keys", username=name, keys=[], reset=True) == {}
    with open(path) as f:
        assert f.read() == ""


def test_errors_match_reference(user: pwd.struct_passwd) -> None:
    ours, ref = start("ours"), start("reference")
    try:
        a, b = ours.connect(), ref.connect()
        for request in (
            {"execute": "guest-ssh-get-authorized-keys", "arguments": {"username": user.pw_name}},
            {"execute": "guest-ssh-get-authorized-keys", "arguments": {"username": "nosuchuserqga"}},
            {"execute": "guest-ssh-add-authorized-keys", "arguments": {"username": user.pw_name,
                                                                       "keys": ["#x"]}},
            {"execute": "guest-ssh-remove-authorized-keys", "arguments": {"username": user.pw_name,
                                                                          "keys": [KEY1]}},
        ):
            assert a.request(request) == b.request(request), request
        # Passwords: only the unknown-user error path (nothing is changed).
        req = {"execute": "guest-set-user-password",
               "arguments": {"username": "nosuchuserqga", "password": "cHc=", "crypted": False}}
        mine, theirs = a.request(req), b.request(req)
        assert theirs["error"]["desc"].startswith("child process has failed to set user password")
        assert mine["error"]["desc"].startswith("child process has failed to set user password: chpasswd:")
    finally:
        ours.stop()
        ref.stop()


def test_symlink_attack(user: pwd.struct_passwd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The user points authorized_keys at a root-only file: it must stay untouched."""
    target = tmp_path / "shadow-like"
    target.write_text("root:$6$abc$def:19000:0:99999:7:::\n")
    target.chmod(0o600)
    ssh = os.path.join(user.pw_dir, ".ssh")
    # As the user would: their own .ssh, then a symlink in it.
    subprocess.run(["su", "-s", "/bin/sh", user.pw_name, "-c",
                    f"mkdir -m 700 {ssh} && ln -s {target} {ssh}/authorized_keys"], check=True)
    agent = start("ours")
    try:
        conn = agent.connect()
        for execute, args in (
            ("guest-ssh-add-authorized-keys", {"username": user.pw_name, "keys": [KEY1]}),
            ("guest-ssh-add-authorized-keys", {"username": user.pw_name, "keys": [KEY1], "reset": True}),
            ("guest-ssh-remove-authorized-keys", {"username": user.pw_name, "keys": ["root"]}),
            ("guest-ssh-get-authorized-keys", {"username": user.pw_name}),
        ):
            reply = conn.request({"execute": execute, "arguments": args})
            assert "error" in reply, (execute, reply)
    finally:
        agent.stop()
    assert target.read_text() == "root:$6$abc$def:19000:0:99999:7:::\n"
    st = target.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    assert os.path.islink(os.path.join(ssh, "authorized_keys"))


def test_ssh_dir_symlink_attack(user: pwd.struct_passwd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """~/.ssh -> a root-owned directory: nothing may be created or chowned there."""
    target = tmp_path / "rootdir"
    target.mkdir(mode=0o700)
    os.symlink(target, os.path.join(user.pw_dir, ".ssh"))
    os.lchown(os.path.join(user.pw_dir, ".ssh"), user.pw_uid, user.pw_gid)
    agent = start("ours")
    try:
        reply = agent.connect().request({"execute": "guest-ssh-add-authorized-keys",
                                         "arguments": {"username": user.pw_name, "keys": [KEY1]}})
    finally:
        agent.stop()
    assert "refusing" in reply["error"]["desc"]
    assert os.listdir(target) == [] and target.stat().st_uid == 0


def _shadow_entry(name: str) -> str:
    with open("/etc/shadow") as f:
        return next(line for line in f if line.startswith(name + ":"))


def test_nul_in_username_and_keys_as_qemu_ga(user: pwd.struct_passwd) -> None:
    """U+0000 reaches qemu-ga as C0 80: "user\\u0000x" is another (unknown) user, and a key
    is written with those bytes; neither is cut at the NUL."""
    name = user.pw_name
    shadow = _shadow_entry(name)
    replies = {}
    for kind in ("reference", "ours"):
        agent = start(kind)
        try:
            conn = agent.connect()
            out = [conn.request({"execute": "guest-set-user-password", "arguments": {
                "username": name + "\0x", "password": "cHc=", "crypted": False}})["error"]["desc"]]
            assert _shadow_entry(name) == shadow, f"{kind} changed {name}'s password"
            out.append(conn.request({"execute": "guest-ssh-get-authorized-keys",
                                     "arguments": {"username": name + "\0x"}}))
            out.append(conn.request({"execute": "guest-ssh-add-authorized-keys", "arguments": {
                "username": name, "keys": [KEY1 + "\0tail"], "reset": True}}))
            with open(_keys_path(user), "rb") as f:
                out.append(f.read())
            out.append(conn.request({"execute": "guest-ssh-get-authorized-keys",
                                     "arguments": {"username": name}}))
            out.append(conn.request({"execute": "guest-ssh-remove-authorized-keys", "arguments": {
                "username": name, "keys": [KEY1 + "\0tail"]}}))
            with open(_keys_path(user), "rb") as f:
                out.append(f.read())
            replies[kind] = out
        finally:
            agent.stop()
    ours, ref = replies["ours"], replies["reference"]
    assert ref[0] == "child process has failed to set user password"  # 7.2: no helper output
    assert ours[0].startswith("child process has failed to set user password: chpasswd:")
    assert ours[1:] == ref[1:]
    assert ours[1] == {"error": {"class": "GenericError",
                                 "desc": f"failed to lookup user '{name}\0x': Success"}}
    assert ours[3] == KEY1.encode() + b"\xc0\x80tail"
    assert ours[4] == {"return": {"keys": [KEY1 + "\0tail"]}}
    assert ours[6] == b""
