"""guest-file-* handlers called directly, with real state, loop and registry."""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import os
import random
import stat
import subprocess
import sys
from typing import Iterator

import pytest

from qga.codec import Base64Pieces, dumps
from qga.commands import files
from qga.config import Config
from qga.context import Context
from qga.errors import QgaError
from qga import qbase64
from qga.guestfile import MODES
from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir
from tests.prereq import require


def make_ctx(statedir: str, **config: object) -> Context:
    """A Context from real parts (the loop is never run here)."""
    state = StateDir(statedir)
    state.load()
    return Context(Config(**config), state, Loop(), Registry([]))  # type: ignore[arg-type]


@pytest.fixture
def ctx(tmp_path) -> Iterator[Context]:
    c = make_ctx(str(tmp_path / "state"))
    yield c
    for handle in list(files._table(c)):
        files.file_close(c, handle)
    c.loop.close()


@pytest.fixture(autouse=True)
def _statedir(tmp_path) -> None:
    (tmp_path / "state").mkdir()


@pytest.fixture(autouse=True, params=["binascii", "pybase64"])
def codec(request) -> Iterator[str]:
    """Every test here runs with the standard library's codec and with pybase64."""
    accelerated = qbase64.use_accelerator(request.param == "pybase64")
    if request.param == "pybase64":
        require(None if accelerated else "pybase64 not installed (pip install .[fast])")
    assert qbase64.backend().split()[0] == request.param
    yield request.param
    qbase64.use_accelerator(True)  # what the agent starts with (QGA_NO_ACCEL aside)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_of(func, *args, **kwargs) -> str:
    with pytest.raises(QgaError) as info:
        func(*args, **kwargs)
    return info.value.desc


HELLO = b"Hello World!\n\0"


def test_file_ops_sequence_of_qemu_test(ctx: Context, tmp_path) -> None:
    """QEMU's /qga/file-ops, step by step."""
    path = str(tmp_path / "foo")
    h = files.file_open(ctx, path, "w+")
    assert h == 1000
    assert files.file_write(ctx, h, b64(HELLO)) == {"count": 14, "eof": False}
    files.file_flush(ctx, h)
    files.file_close(ctx, h)
    assert open(path, "rb").read() == HELLO
    h = files.file_open(ctx, path, "r")
    assert h == 1001
    assert files.file_read(ctx, h) == {"count": 14, "buf-b64": b64(HELLO).encode(), "eof": True}
    assert files.file_read(ctx, h) == {"count": 0, "buf-b64": b"", "eof": True}
    assert files.file_seek(ctx, h, 6, "set") == {"position": 6, "eof": False}
    assert files.file_read(ctx, h) == {"count": 8, "buf-b64": b64(HELLO[6:]).encode(), "eof": True}
    files.file_close(ctx, h)


def test_write_then_read_at_end(ctx: Context, tmp_path) -> None:
    """QEMU's /qga/file-write-read: a read right after a write is at EOF."""
    h = files.file_open(ctx, str(tmp_path / "foo"), "w+")
    assert files.file_write(ctx, h, b64(HELLO))["count"] == 14
    assert files.file_read(ctx, h) == {"count": 0, "buf-b64": b"", "eof": True}
    assert files.file_seek(ctx, h, 0, 0) == {"position": 0, "eof": False}
    assert files.file_read(ctx, h) == {"count": 14, "buf-b64": b64(HELLO).encode(), "eof": True}


def test_exact_count_is_not_eof(ctx: Context, tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcd")
    h = files.file_open(ctx, str(path))
    assert files.file_read(ctx, h, 4) == {"count": 4, "buf-b64": b64(b"abcd").encode(), "eof": False}
    assert files.file_read(ctx, h, 0) == {"count": 0, "buf-b64": b"", "eof": False}
    assert files.file_read(ctx, h, 4)["eof"] is True


def test_unknown_handle_everywhere(ctx: Context) -> None:
    msg = "handle '4242' has not been found"
    assert error_of(files.file_read, ctx, 4242) == msg
    assert error_of(files.file_write, ctx, 4242, "") == msg
    assert error_of(files.file_seek, ctx, 4242, 0, "set") == msg
    assert error_of(files.file_flush, ctx, 4242) == msg
    assert error_of(files.file_close, ctx, 4242) == msg


def test_open_errors(ctx: Context, tmp_path) -> None:
    assert error_of(files.file_open, ctx, "x", "rw") == "invalid file open mode 'rw'"
    missing = str(tmp_path / "missing")
    assert error_of(files.file_open, ctx, missing) == \
        f"failed to open file '{missing}' (mode: 'r'): No such file or directory"
    # A failed open does not consume a handle number.
    assert files.file_open(ctx, str(tmp_path), "r") == 1000


def test_directory_opens_but_does_not_read(ctx: Context, tmp_path) -> None:
    h = files.file_open(ctx, str(tmp_path))
    assert error_of(files.file_read, ctx, h) == "failed to read file: Is a directory"


def test_all_modes(ctx: Context, tmp_path) -> None:
    for i, mode in enumerate(sorted(MODES)):
        path = tmp_path / f"m{i}"
        path.write_bytes(b"old")
        h = files.file_open(ctx, str(path), mode)
        if "r" in mode and "+" not in mode:
            assert error_of(files.file_write, ctx, h, b64(b"x")) == \
                "failed to write to file: Bad file descriptor"
        else:
            files.file_write(ctx, h, b64(b"new"))
        files.file_close(ctx, h)
        expected = {"r": b"old", "w": b"new", "a": b"oldnew"}[mode[0]]
        if mode.startswith("r") and "+" in mode:
            expected = b"new"
        assert path.read_bytes() == expected, mode


def test_append_write_only_position_is_end(ctx: Context, tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    h = files.file_open(ctx, str(path), "a")
    assert files.file_seek(ctx, h, 0, "cur")["position"] == 5


def test_new_file_mode_ignores_umask_existing_keeps_mode(ctx: Context, tmp_path) -> None:
    old = os.umask(0o077)
    try:
        h = files.file_open(ctx, str(tmp_path / "new"), "w")
        files.file_close(ctx, h)
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o666
        (tmp_path / "old").write_bytes(b"")
        os.chmod(tmp_path / "old", 0o600)
        files.file_close(ctx, files.file_open(ctx, str(tmp_path / "old"), "w"))
        assert stat.S_IMODE(os.stat(tmp_path / "old").st_mode) == 0o600
    finally:
        os.umask(old)


def test_read_count_bounds(ctx: Context, tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    h = files.file_open(ctx, str(path))
    assert error_of(files.file_read, ctx, h, -1) == "value '-1' is invalid for argument count"
    assert error_of(files.file_read, ctx, h, 48 * 1024 * 1024 + 1) == \
        "value '50331649' is invalid for argument count"
    assert files.file_read(ctx, h, 48 * 1024 * 1024)["count"] == 1


def test_write_count_and_base64(ctx: Context, tmp_path) -> None:
    h = files.file_open(ctx, str(tmp_path / "f"), "w+")
    assert error_of(files.file_write, ctx, h, "SGVs bG8=") == "Base64 data contains invalid characters"
    assert error_of(files.file_write, ctx, h, "SGVsbG8=", 6) == "value '6' is invalid for argument count"
    assert error_of(files.file_write, ctx, h, "SGVsbG8=", -1) == "value '-1' is invalid for argument count"
    assert files.file_write(ctx, h, "SGVsbG8=", 2) == {"count": 2, "eof": False}
    assert files.file_write(ctx, h, "SGVs\nbG8")["count"] == 3  # partial group dropped
    assert files.file_write(ctx, h, "")["count"] == 0
    files.file_seek(ctx, h, 0, "set")
    assert base64.b64decode(files.file_read(ctx, h)["buf-b64"]) == b"HeHel"


def test_seek(ctx: Context, tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    h = files.file_open(ctx, str(path))
    assert files.file_seek(ctx, h, -3, "end")["position"] == 7
    assert files.file_seek(ctx, h, 1, 1)["position"] == 8
    assert files.file_seek(ctx, h, 100, 0)["position"] == 100  # past the end is fine
    assert error_of(files.file_seek, ctx, h, -1, "set") == "failed to seek file: Invalid argument"
    assert error_of(files.file_seek, ctx, h, 0, 3) == "invalid whence code 3"
    assert error_of(files.file_seek, ctx, h, 0, -1) == "invalid whence code -1"


def test_fifo_nonblocking(ctx: Context, tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    h = files.file_open(ctx, str(fifo), "r")  # must not hang: O_NONBLOCK
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        assert error_of(files.file_read, ctx, h) == "failed to read file: Resource temporarily unavailable"
        os.write(writer, b"abc")
        assert files.file_read(ctx, h) == {"count": 3, "buf-b64": b64(b"abc").encode(), "eof": False}
    finally:
        os.close(writer)


def test_handles_persist_in_state(tmp_path) -> None:
    statedir = str(tmp_path / "state")
    c1 = make_ctx(statedir)
    path = str(tmp_path / "f")
    assert [files.file_open(c1, path, "w") for _ in range(3)] == [1000, 1001, 1002]
    c2 = make_ctx(statedir)  # a restarted agent
    assert files.file_open(c2, path, "r") == 1003
    assert error_of(files.file_read, c2, 1000) == "handle '1000' has not been found"
    for c in (c1, c2):
        for handle in list(files._table(c)):
            files.file_close(c, handle)


def test_nofollow_and_handle_cap(tmp_path) -> None:
    c = make_ctx(str(tmp_path / "state"), file_nofollow=True, max_file_handles=2)
    target = tmp_path / "target"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    assert error_of(files.file_open, c, str(tmp_path / "link")) == \
        f"failed to open file '{tmp_path / 'link'}' (mode: 'r'): Too many levels of symbolic links"
    files.file_open(c, str(target))
    files.file_open(c, str(target))
    assert "max-file-handles is 2" in error_of(files.file_open, c, str(target))
    for handle in list(files._table(c)):
        files.file_close(c, handle)


@pytest.mark.parametrize("size", [1, 4 * 1024 * 1024, 48 * 1024 * 1024])
def test_round_trip_sha256(ctx: Context, tmp_path, size: int) -> None:
    data = os.urandom(size)
    path = str(tmp_path / "blob")
    h = files.file_open(ctx, path, "wb")
    chunk = 8 * 1024 * 1024
    for off in range(0, size, chunk):
        assert files.file_write(ctx, h, b64(data[off:off + chunk]))["count"] == len(data[off:off + chunk])
    files.file_close(ctx, h)
    assert hashlib.sha256(open(path, "rb").read()).digest() == hashlib.sha256(data).digest()
    h = files.file_open(ctx, path, "rb")
    got = files.file_read(ctx, h, 48 * 1024 * 1024)
    assert got["count"] == size and got["eof"] is (size < 48 * 1024 * 1024)
    text = got["buf-b64"]
    # Beyond one chunk the data is encoded chunk by chunk, never held whole.
    assert isinstance(text, Base64Pieces) is (size > files._ENCODE_CHUNK)
    joined = b"".join(text) if isinstance(text, Base64Pieces) else text
    assert joined == base64.b64encode(data)
    assert dumps(got) == dumps(dict(got, **{"buf-b64": joined.decode()}))


# -- base64 as glib decodes it -------------------------------------------------------
def test_qbase64_examples() -> None:
    assert qbase64.decode("SGVsbG8") == b"Hel"
    assert qbase64.decode("SGVsbA==") == b"Hell"
    assert qbase64.decode("AB=C") == b"\x00\x02"
    assert qbase64.decode("=AAA") == b"\x00\x00\x00"
    # U+0000 reaches qemu-ga as C0 80 (not a C string's end): outside the alphabet.
    for bad in ("a b", "a-b", "é", "a\tb", "a\rb", "SGVsbG8=\0junk"):
        with pytest.raises(QgaError, match="^Base64 data contains invalid characters$"):
            qbase64.decode(bad)


def _glib() -> "ctypes.CDLL":
    name = ctypes.util.find_library("glib-2.0")
    require(None if name else "libglib-2.0 not installed (the reference decoder)")
    lib = ctypes.CDLL(name)
    lib.g_base64_decode.restype = ctypes.c_void_p
    lib.g_base64_decode.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
    return lib


def _glib_decode(glib: "ctypes.CDLL", text: bytes) -> bytes:
    size = ctypes.c_size_t()
    ptr = glib.g_base64_decode(text, ctypes.byref(size))
    expected = ctypes.string_at(ptr, size.value)
    glib.g_free(ctypes.c_void_p(ptr))
    return expected


def test_qbase64_matches_glib() -> None:
    glib = _glib()
    rnd = random.Random(1234)
    alphabet = b"AZaz09+/=\n"
    for _ in range(20000):
        text = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 17)))
        assert qbase64.decode(text) == _glib_decode(glib, text), text


def test_qbase64_long_text_with_odd_bytes_matches_glib() -> None:
    """Long canonical base64 with one oddity spliced in: each takes the lenient path."""
    glib = _glib()
    rnd = random.Random(99)
    for _ in range(300):
        text = bytearray(base64.b64encode(rnd.randbytes(rnd.randint(1000, 3000))))
        for _k in range(rnd.randint(1, 3)):
            at = rnd.randrange(len(text) + 1)
            text[at:at] = rnd.choice([b"=", b"==", b"====", b"\n", b"A", b"\n\n", b"A="])
        if rnd.random() < 0.3:
            del text[-rnd.randint(1, 3):]   # a truncated last group
        for form in (bytes(text), bytes(text).decode()):
            assert qbase64.decode(form) == _glib_decode(glib, bytes(text)), bytes(text)


def test_encode_is_standard_base64() -> None:
    for size in (0, 1, 2, 3, 4, 5, 1000, 1 << 20):
        data = os.urandom(size)
        assert qbase64.encode(data) == base64.b64encode(data)
        assert qbase64.encode(memoryview(data)) == base64.b64encode(data)


def test_no_accel_environment_forces_the_standard_library() -> None:
    out = subprocess.run([sys.executable, "-c", "from qga import qbase64; print(qbase64.backend())"],
                         env=dict(os.environ, QGA_NO_ACCEL="1"), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "binascii"


def test_reads_reuse_the_handle_buffer(tmp_path) -> None:
    from qga.guestfile import GuestFile

    path = tmp_path / "blob"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    gfile = GuestFile.open(str(path), "r")
    try:
        first, eof = gfile.read(1 << 20)
        assert bytes(first) == data[:1 << 20] and not eof
        second, _ = gfile.read(1 << 20)
        assert second.obj is first.obj            # the same buffer, filled again
        assert bytes(second) == data[1 << 20:2 << 20]
        small, _ = gfile.read(10)
        assert small.obj is not first.obj         # a small read does not pin the big buffer
        assert bytes(small) == data[2 << 20:(2 << 20) + 10]
    finally:
        gfile.close()
