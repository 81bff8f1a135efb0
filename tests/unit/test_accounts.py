"""guest-set-user-password (against a stand-in chpasswd) and guest-ssh-* on a
temporary home directory (QEMU's qga-ssh-test cases plus symlink attacks).
The real-user variants live in tests/root/test_accounts_root.py."""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from qga.commands import accounts
from qga.errors import QgaError
from qga.linux.authkeys import UserSsh, build_filename
from tests.unit.test_system import fake_program, make_ctx, validate

UID, GID = 54321, 54322  # root may chown to ids that have no passwd entry
KEY1, KEY2 = "algo key1 comments", "algo key2 comments"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- guest-set-user-password -----------------------------------------------------------

@pytest.fixture
def chpasswd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A chpasswd stand-in recording its arguments and stdin."""
    record = tmp_path / "chpasswd.log"
    monkeypatch.setattr(accounts, "CHPASSWD", fake_program(
        tmp_path / "chpasswd", f'echo "args:$*" > {record}; cat >> {record}'))
    return record


def call_password(tmp_path: Path, **args: Any) -> None:
    accounts.set_user_password(make_ctx(tmp_path), **validate("guest-set-user-password", args))


def test_password_plain_and_crypted(tmp_path: Path, chpasswd: Path) -> None:
    call_password(tmp_path, username="alice", password=b64(b"s3cret pass"), crypted=False)
    assert chpasswd.read_text() == "args:\nalice:s3cret pass\n"
    call_password(tmp_path, username="alice", password=b64(b"$6$salt$hash"), crypted=True)
    assert chpasswd.read_text() == "args:-e\nalice:$6$salt$hash\n"


def test_password_never_on_command_line(tmp_path: Path, chpasswd: Path) -> None:
    call_password(tmp_path, username="bob", password=b64(b"topsecret"), crypted=False)
    args_line = chpasswd.read_text().splitlines()[0]
    assert "topsecret" not in args_line


@pytest.mark.parametrize("username, password, desc", [
    ("alice", "not base64!", "Base64 data contains invalid characters"),
    ("alice", b64(b"two\nlines"), "forbidden characters in raw password"),
    ("al:ice", b64(b"pw"), "forbidden characters in username"),
    ("al\nice", b64(b"pw"), "forbidden characters in username"),
])
def test_password_rejected(tmp_path: Path, chpasswd: Path, username: str, password: str, desc: str) -> None:
    with pytest.raises(QgaError) as err:
        call_password(tmp_path, username=username, password=password, crypted=False)
    assert err.value.desc == desc
    assert not chpasswd.exists()


def test_password_lenient_base64_and_nul(tmp_path: Path, chpasswd: Path) -> None:
    # A trailing partial quartet is dropped; the password ends at a NUL (C string).
    call_password(tmp_path, username="u", password="cGFzcw", crypted=False)
    assert chpasswd.read_text().endswith("u:pas\n")
    call_password(tmp_path, username="u", password=b64(b"ab\0\ncd"), crypted=False)
    assert chpasswd.read_text().endswith("u:ab\n")


def test_password_chpasswd_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "CHPASSWD", fake_program(
        tmp_path / "chpasswd", "echo 'chpasswd: (line 1, user x) password not changed' >&2; exit 1"))
    with pytest.raises(QgaError) as err:
        call_password(tmp_path, username="x", password=b64(b"pw"), crypted=False)
    assert err.value.desc == ("child process has failed to set user password: "
                              "chpasswd: (line 1, user x) password not changed\n")


def test_password_args_validation() -> None:
    with pytest.raises(QgaError, match="^Parameter 'crypted' is missing$"):
        validate("guest-set-user-password", {"username": "a", "password": "cA=="})


# -- authorized_keys --------------------------------------------------------------------

@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory owned by UID; accounts._lookup resolves 'user' to it."""
    home = tmp_path / "home" / "user"
    home.mkdir(parents=True)
    os.chown(home, UID, GID)

    def lookup(username: str) -> UserSsh:
        if username != "user":
            raise QgaError(f"failed to lookup user '{username}': Success")
        return UserSsh(str(home), UID, GID)

    monkeypatch.setattr(accounts, "_lookup", lookup)
    return home


def keys_file(home: Path) -> Path:
    return home / ".ssh" / "authorized_keys"


def add(tmp_path: Path, keys: List[str], **extra: Any) -> None:
    args: Dict[str, Any] = dict(username="user", keys=keys, **extra)
    accounts.ssh_add_authorized_keys(make_ctx(tmp_path), **validate("guest-ssh-add-authorized-keys", args))


def remove(tmp_path: Path, keys: List[str]) -> None:
    accounts.ssh_remove_authorized_keys(make_ctx(tmp_path), **validate(
        "guest-ssh-remove-authorized-keys", {"username": "user", "keys": keys}))


def get(tmp_path: Path) -> List[str]:
    return accounts.ssh_get_authorized_keys(make_ctx(tmp_path), username="user")["keys"]


def test_add_keys_creates_dir_and_file(tmp_path: Path, home: Path) -> None:
    add(tmp_path, [KEY2])
    ssh = home / ".ssh"
    assert keys_file(home).read_text() == KEY2
    assert (ssh.stat().st_uid, ssh.stat().st_gid, ssh.stat().st_mode & 0o777) == (UID, GID, 0o700)
    st = keys_file(home).stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (UID, GID, 0o600)
    add(tmp_path, [KEY1, KEY2])
    assert keys_file(home).read_text() == f"{KEY2}\n{KEY1}"  # no duplicate, no trailing newline
    assert sorted(os.listdir(ssh)) == ["authorized_keys"]    # no temporary file left


def test_add_reset_keys(tmp_path: Path, home: Path) -> None:
    add(tmp_path, [KEY1, KEY2])
    add(tmp_path, [KEY2], reset=True)
    assert keys_file(home).read_text() == KEY2
    add(tmp_path, [], reset=True)
    assert keys_file(home).read_text() == ""


def test_add_after_trailing_newline_quirk(tmp_path: Path, home: Path) -> None:
    add(tmp_path, ["a"])
    keys_file(home).write_text("a\n")
    add(tmp_path, ["b"])
    assert keys_file(home).read_text() == "a\n\nb"


def test_remove_keys(tmp_path: Path, home: Path) -> None:
    text = f"{KEY1}\n{KEY1}\n# a commented line\nalgo some-key another\n"
    add(tmp_path, [])
    keys_file(home).write_text(text)
    remove(tmp_path, [KEY2])
    assert keys_file(home).read_text() == text
    remove(tmp_path, [KEY1, KEY2])
    assert keys_file(home).read_text() == "# a commented line\nalgo some-key another\n"


def test_remove_missing_file_is_success(tmp_path: Path, home: Path) -> None:
    remove(tmp_path, [KEY1])
    assert not (home / ".ssh").exists()


def test_get_keys_reverse_order(tmp_path: Path, home: Path) -> None:
    add(tmp_path, [])
    keys_file(home).write_text(f"{KEY1}\n# a commented line\n  algo some-key another \t\n\n{KEY1}\n")
    assert get(tmp_path) == [KEY1, "algo some-key another", KEY1]


def test_get_keys_missing(tmp_path: Path, home: Path) -> None:
    path = keys_file(home)
    with pytest.raises(QgaError) as err:
        get(tmp_path)
    assert err.value.desc == f"failed to read '{path}': Failed to open file “{path}”: No such file or directory"


@pytest.mark.parametrize("key", ["# comment", "two\nlines"])
def test_invalid_keys(tmp_path: Path, home: Path, key: str) -> None:
    for call in (add, remove):
        with pytest.raises(QgaError) as err:
            call(tmp_path, [KEY1, key])
        assert err.value.desc == f"invalid OpenSSH public key: '{key}'"
    add(tmp_path, [""])  # the empty string is accepted
    assert keys_file(home).read_text() == ""


def test_unknown_user(tmp_path: Path, home: Path) -> None:
    with pytest.raises(QgaError, match="^failed to lookup user 'nobody-here': Success$"):
        accounts.ssh_get_authorized_keys(make_ctx(tmp_path), username="nobody-here")


def test_real_lookup_of_unknown_user() -> None:
    with pytest.raises(QgaError, match="^failed to lookup user 'no-such-user-qga': Success$"):
        accounts._lookup("no-such-user-qga")
    with pytest.raises(QgaError, match="^failed to lookup user '': Success$"):
        accounts._lookup("")


def test_missing_home(tmp_path: Path, home: Path) -> None:
    os.rmdir(home)
    with pytest.raises(QgaError) as err:
        add(tmp_path, [KEY1])
    assert err.value.desc == f"failed to create directory '{home}/.ssh': No such file or directory"


# -- symlink and special-file attacks (the agent is root in a user's directory) ------------

def test_keys_symlink_not_followed(tmp_path: Path, home: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
    add(tmp_path, [])
    keys_file(home).unlink()
    keys_file(home).symlink_to(secret)
    with pytest.raises(QgaError, match="Too many levels of symbolic links"):
        get(tmp_path)
    for call in (lambda: add(tmp_path, [KEY1]), lambda: add(tmp_path, [KEY1], reset=True),
                 lambda: remove(tmp_path, ["x"])):
        with pytest.raises(QgaError):
            call()
    assert secret.read_text() == "root:$6$secret:19000:0:99999:7:::\n"
    assert secret.stat().st_uid == 0 and keys_file(home).is_symlink()


def test_ssh_dir_symlink_not_followed(tmp_path: Path, home: Path) -> None:
    target = tmp_path / "root-ssh"
    target.mkdir()
    (home / ".ssh").symlink_to(target)
    with pytest.raises(QgaError, match="refusing to use .*symbolic link"):
        add(tmp_path, [KEY1])
    with pytest.raises(QgaError, match="Too many levels of symbolic links|Not a directory"):
        get(tmp_path)
    assert os.listdir(target) == []


def test_fifo_does_not_hang(tmp_path: Path, home: Path) -> None:
    add(tmp_path, [])
    keys_file(home).unlink()
    os.mkfifo(keys_file(home))
    with pytest.raises(QgaError, match="not a regular file"):
        get(tmp_path)


def test_hard_link_to_foreign_file_not_read(tmp_path: Path, home: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("private\n")
    os.chown(secret, 4242, 4242)
    add(tmp_path, [])
    keys_file(home).unlink()
    os.link(secret, keys_file(home))
    with pytest.raises(QgaError, match="hard link"):
        get(tmp_path)
    add(tmp_path, [KEY1])  # replaced by a new file; the linked inode is untouched
    assert secret.read_text() == "private\n" and keys_file(home).read_text() == KEY1


def test_build_filename() -> None:
    assert build_filename("/home/u/", ".ssh") == "/home/u/.ssh"
    assert build_filename("/", ".ssh", "authorized_keys") == "/.ssh/authorized_keys"
    assert build_filename("", ".ssh") == ".ssh"
