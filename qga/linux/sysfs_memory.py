"""Memory blocks in sysfs (guest-get/set-memory-blocks, -block-info).

The directory is a parameter (tests use copied trees).  qemu-ga's per-entry
semantics are reproduced, including the ``error-code`` quirks of
guest-set-memory-blocks: every path other than "written" or "already in the
requested state" attaches errno, even when ``response`` stays ``success``.
The readers raise :class:`~qga.linux.sysfs.StepError` (``opendir``/``scandir``
of a directory, ``open``/``pread``/``pwrite`` of a file in it) or
:class:`NoMemoryBlocks`; the command layer words them.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from qga.errors import InternalError
from qga.linux.sysfs import StepError, open_dir

DEFAULT_DIR = "/sys/devices/system/memory/"


class NoMemoryBlocks(InternalError):
    """The memory directory exists but holds no ``memoryN`` block."""


def _dir(root: str) -> str:
    return root if root.endswith("/") else root + "/"


def _open(dirpath: str, dirfd: int, name: str, flags: int) -> int:
    try:
        return os.open(name, flags | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError as exc:
        raise StepError("open", dirpath, name, exc) from None


def _read_file(dirpath: str, dirfd: int, name: str, size: int) -> bytes:
    fd = _open(dirpath, dirfd, name, os.O_RDONLY)
    try:
        data = os.pread(fd, size, 0)
    except OSError as exc:
        raise StepError("pread", dirpath, name, exc) from None
    finally:
        os.close(fd)
    if not data:
        raise StepError("pread", dirpath, name)
    return data


def _write_file(dirpath: str, dirfd: int, name: str, data: bytes) -> None:
    fd = _open(dirpath, dirfd, name, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
    except OSError as exc:
        raise StepError("pwrite", dirpath, name, exc) from None
    finally:
        os.close(fd)


def _index_text(index: int) -> str:
    # qemu-ga formats the uint64 index with PRId64.
    return str(index - (1 << 64) if index >= 1 << 63 else index)


def _leading_int(text: str, base: int) -> int:
    """strtoul/strtol: leading digits in ``base`` after blanks, 0 if none."""
    text = text.strip()
    digits = "0123456789abcdef"[:base]
    end = 0
    while end < len(text) and text[end].lower() in digits:
        end += 1
    return int(text[:end], base) if end else 0


def _read_block(root: str, name: str) -> Dict[str, Any]:
    """One GuestMemoryBlock from ``memoryN`` (schema order: phys-index, online, can-offline)."""
    block: Dict[str, Any] = {"phys-index": _leading_int(name[6:], 10), "online": True, "can-offline": False}
    dirpath = f"{root}memory{_index_text(block['phys-index'])}/"
    dirfd = open_dir(dirpath)
    try:
        try:
            state = _read_file(dirpath, dirfd, "state", 10)
        except StepError as exc:
            if exc.errno == errno.ENOENT:  # old kernels: no state file
                return block
            raise
        block["online"] = state.startswith(b"online")
        try:
            block["can-offline"] = _read_file(dirpath, dirfd, "removable", 1) != b"0"
        except StepError as exc:
            if exc.errno != errno.ENOENT:
                raise
        return block
    finally:
        os.close(dirfd)


def read_memory_blocks(root: str = DEFAULT_DIR) -> List[Dict[str, Any]]:
    """guest-get-memory-blocks: ``[]`` when ``root`` does not exist."""
    root = _dir(root)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StepError("scandir", root, cause=exc) from None
    blocks = [_read_block(root, e.name) for e in entries
              if e.name.startswith("memory") and e.is_dir(follow_symlinks=False)]
    if not blocks:
        raise NoMemoryBlocks(root)
    return blocks


def _set_block(root: str, request: Mapping[str, Any]) -> Tuple[str, Optional[int]]:
    """(response, error-code or None) for one request, as qemu-ga decides it."""
    try:
        os.close(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as exc:
        # Quirk: a non-ENOENT failure leaves "success" but attaches errno.
        return ("operation-not-supported" if exc.errno == errno.ENOENT else "success"), exc.errno
    dirpath = f"{root}memory{_index_text(request['phys-index'])}/"
    try:
        dirfd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return ("not-found" if exc.errno == errno.ENOENT else "operation-failed"), exc.errno
    try:
        try:
            state = _read_file(dirpath, dirfd, "state", 10)
        except StepError as exc:
            if exc.errno == errno.ENOENT:
                # Quirk: onlining a block without a state file is "success" + errno.
                return ("success" if request["online"] else "operation-not-supported"), exc.errno
            return "operation-failed", exc.errno
        if request["online"] != state.startswith(b"online"):
            try:
                _write_file(dirpath, dirfd, "state", b"online" if request["online"] else b"offline")
            except StepError as exc:
                return "operation-failed", exc.errno
        return "success", None
    finally:
        os.close(dirfd)


def set_memory_blocks(requests: Sequence[Mapping[str, Any]], root: str = DEFAULT_DIR) -> List[Dict[str, Any]]:
    """guest-set-memory-blocks: one GuestMemoryBlockResponse per request, in order."""
    root = _dir(root)
    result: List[Dict[str, Any]] = []
    for request in requests:
        response, code = _set_block(root, request)
        entry: Dict[str, Any] = {"phys-index": request["phys-index"], "response": response}
        if code is not None:
            entry["error-code"] = code
        result.append(entry)
    return result


def read_block_info(root: str = DEFAULT_DIR) -> Dict[str, int]:
    """guest-get-memory-block-info: ``block_size_bytes`` parsed as hex."""
    root = _dir(root)
    dirfd = open_dir(root)
    try:
        data = _read_file(root, dirfd, "block_size_bytes", 20)
    finally:
        os.close(dirfd)
    return {"size": _leading_int(data.decode("ascii", "replace"), 16)}
