"""Account credentials: guest-set-user-password and guest-ssh-*-authorized-keys."""
from __future__ import annotations

import pwd
from typing import Any, Dict, List, Optional, Sequence

from qga import qbase64
from qga.commands.failures import helper_error
from qga.context import Context
from qga.cstring import os_bytes, os_text
from qga.errors import QgaError, strerror
from qga.linux.authkeys import KeysError, UserSsh, read_or_none
from qga.linux.helpers import HelperFailed, helper_timeout, run_helper
from qga.command import command

#: Overridable by tests: chpasswd is looked up in PATH, as qemu-ga does.
CHPASSWD = "chpasswd"

#: qemu-ga's texts (glib's inner messages included) per (phase, step) of a
#: KeysError; the refusals are ours.
_KEYS_TEXTS = {
    ("read", "open"): "failed to read '{keys}': Failed to open file “{keys}”: {err}",
    ("read", "read"): "failed to read '{keys}': Failed to read from file “{keys}”: {err}",
    ("read", "type"): "failed to read '{keys}': Failed to read from file “{keys}”: not a regular file",
    ("read", "hardlink"): "failed to read '{keys}': Failed to open file “{keys}”: "
                          "hard link to a file owned by another user",
    ("dir", "create"): "failed to create directory '{ssh}': {err}",
    ("dir", "refuse"): "refusing to use '{ssh}': it is a symbolic link or not a directory",
    ("dir", "chown"): "failed to set ownership of directory '{ssh}': {err}",
    ("dir", "chmod"): "failed to set permissions of directory '{ssh}': {err}",
    ("write", "opendir"): "failed to write to '{keys}': Failed to create file “{keys}”: {err}",
    ("write", "stat"): "failed to write to '{keys}': Failed to get attributes of file “{keys}”: {err}",
    ("write", "refuse"): "failed to write to '{keys}': refusing to replace “{keys}”: "
                         "it is a symbolic link or not a regular file",
    ("write", "create"): "failed to write to '{keys}': Failed to create file “{tmp}”: {err}",
    ("write", "write"): "failed to write to '{keys}': Failed to write file “{tmp}”: write() failed: {err}",
    ("write", "rename"): "failed to write to '{keys}': Failed to rename file “{tmp}” to “{keys}”: "
                         "g_rename() failed: {err}",
    ("file", "chown"): "failed to set ownership of directory '{keys}': {err}",  # (sic) "directory"
    ("file", "chmod"): "failed to set permissions of '{keys}': {err}",
}


def keys_error(exc: KeysError) -> QgaError:
    """qemu-ga's text for a failed read or write of authorized_keys."""
    err = strerror(exc.cause.errno or 0) if exc.cause else ""
    return QgaError(_KEYS_TEXTS[exc.phase, exc.step].format(
        keys=exc.keys_path, ssh=exc.ssh_path, tmp=exc.tmp_path, err=err))


@command("guest-set-user-password", order=27, group="user-auth",
         args={"username": "str", "password": "str", "crypted": "bool"}, audit=("username", "crypted"))
def set_user_password(ctx: Context, username: str, password: str, crypted: bool) -> None:
    """Set a password through chpasswd's stdin (never on a command line)."""
    ctx.audit("guest-set-user-password called", username=username, crypted=crypted)
    raw = qbase64.decode(password)
    raw = raw.split(b"\0", 1)[0]  # the decoded password is a C string: a real NUL ends it
    if b"\n" in raw:
        raise QgaError("forbidden characters in raw password")
    if "\n" in username or ":" in username:
        raise QgaError("forbidden characters in username")
    argv = [CHPASSWD] + (["-e"] if crypted else [])
    try:
        run_helper(argv, "set user password", input=os_bytes(username) + b":" + raw + b"\n",
                   timeout=helper_timeout(ctx.config))
    except HelperFailed as exc:
        raise helper_error(exc) from None


def _lookup(username: str) -> UserSsh:
    username = os_text(username)
    try:
        pw = pwd.getpwnam(username)
    except (KeyError, ValueError):
        # glib reports errno, which getpwnam_r leaves at 0 for "no such user".
        raise QgaError(f"failed to lookup user '{username}': Success") from None
    return UserSsh(pw.pw_dir, pw.pw_uid, pw.pw_gid)


def _check_keys(keys: Sequence[str]) -> List[str]:
    """The keys as qemu-ga compares and writes them, or its error for a bad one."""
    keys = [os_text(key) for key in keys]
    for key in keys:
        if key.startswith("#") or "\n" in key:
            raise QgaError(f"invalid OpenSSH public key: '{key}'")
    return keys


@command("guest-ssh-get-authorized-keys", order=38, group="user-auth", args={"username": "str"})
def ssh_get_authorized_keys(ctx: Context, username: str) -> Dict[str, Any]:
    """Stripped non-comment lines, in reverse file order (as qemu-ga)."""
    user = _lookup(username)
    try:
        text = user.read()
    except KeysError as exc:
        raise keys_error(exc) from None
    keys = [line.strip(" \t\n\v\f\r") for line in text.split("\n")]
    return {"keys": [k for k in reversed(keys) if k and not k.startswith("#")]}


@command("guest-ssh-add-authorized-keys", order=39, group="user-auth",
         args={"username": "str", "keys": ["str"], "*reset": "bool"}, audit=("username", "reset"))
def ssh_add_authorized_keys(ctx: Context, username: str, keys: List[str], reset: bool = False) -> None:
    """Append keys not already present as exact lines (``reset``: replace all)."""
    keys = _check_keys(keys)
    user = _lookup(username)
    ctx.audit("guest-ssh-add-authorized-keys called", username=username, count=len(keys), reset=reset)
    text: Optional[str] = None if reset else read_or_none(user)
    lines = text.split("\n") if text is not None else []
    for key in keys:
        if key not in lines:
            lines.append(key)
    try:
        user.write("\n".join(lines), create_dir=text is None)
    except KeysError as exc:
        raise keys_error(exc) from None


@command("guest-ssh-remove-authorized-keys", order=40, group="user-auth",
         args={"username": "str", "keys": ["str"]}, audit=("username",))
def ssh_remove_authorized_keys(ctx: Context, username: str, keys: List[str]) -> None:
    """Drop every line equal to one of ``keys``; a missing file is success."""
    keys = _check_keys(keys)
    user = _lookup(username)
    ctx.audit("guest-ssh-remove-authorized-keys called", username=username, count=len(keys))
    if not user.exists():
        return
    try:
        lines = user.read().split("\n")
        remove = set(keys)
        user.write("\n".join(line for line in lines if line not in remove), create_dir=False)
    except KeysError as exc:
        raise keys_error(exc) from None
