"""qga.linux.sysfs readers of /proc files: fresh text at every call, one descriptor kept."""
from __future__ import annotations

import os
from pathlib import Path

from qga.linux import sysfs
from qga.linux.sysfs import read_file, read_proc


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_read_proc_keeps_one_descriptor_and_reads_afresh() -> None:
    # rchar counts the bytes this process has read: every read of the file raises it.
    def rchar() -> int:
        text = read_proc("/proc/self/io").decode()
        return int(text.split("rchar:")[1].split()[0])

    fds = _fds()
    first = rchar()
    assert _fds() == fds + 1  # opened once (no other test reads this file) and kept
    values = [rchar() for _ in range(3)]
    assert first < values[0] < values[1] < values[2]
    assert _fds() == fds + 1  # the same descriptor each time


def test_read_proc_reads_past_the_first_chunk() -> None:
    # smaps of a Python process is far beyond one 64 KiB pread.
    data = read_proc("/proc/self/smaps")
    assert len(data) > 65536 and data.endswith(b"\n")
    assert data.count(b"\nRss:") == data.count(b"\nVmFlags:") > 0  # whole records, none cut or doubled


def test_other_paths_are_opened_each_time(tmp_path: Path) -> None:
    path = tmp_path / "stat"
    path.write_bytes(b"one\n")
    assert read_proc(str(path)) == b"one\n"
    new = tmp_path / "new"
    new.write_bytes(b"two\n")
    new.replace(path)  # another inode under the same name
    assert read_proc(str(path)) == read_file(str(path)) == b"two\n"


def test_a_failing_descriptor_is_dropped_and_the_file_opened_again() -> None:
    path = "/proc/self/statm"  # no other test reads it
    fields = len(read_proc(path).split())
    kept = sysfs._KEPT[path]
    os.close(kept.fd)  # closed behind its back: the next pread fails (EBADF)
    assert len(read_proc(path).split()) == fields  # read by a fresh open instead
    assert path not in sysfs._KEPT and kept.fd == -1
    assert len(read_proc(path).split()) == fields
    assert sysfs._KEPT[path] is not kept  # a new descriptor is kept


def test_a_single_record_file_is_whole_after_one_short_read(tmp_path: Path) -> None:
    # /proc/stat is generated whole before its first read: one read gives it all.
    stat = read_proc("/proc/stat", single=True)
    assert stat.startswith(b"cpu ") and stat.endswith(b"\n") and b"\nctxt " in stat
    # A read as long as asked for may have more behind it: read on to the end.
    path = tmp_path / "big"
    path.write_bytes(bytes(range(256)) * 400)   # 102,400 bytes
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sysfs._pread_all(fd, single=True) == path.read_bytes()
    finally:
        os.close(fd)
