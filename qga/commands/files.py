"""guest-file-open/close/read/write/seek/flush (spec 2.3).

Handles are global, shared by all clients and never reused: numbers come
from the persistent counter in ``<statedir>/qga.state`` (1000, 1001, …).
Texts and limits are qemu-ga's; base64 goes through :mod:`binascii` and the
data never passes through a per-byte Python loop.

Beyond qemu-ga: ``file-nofollow`` (config) adds O_NOFOLLOW to every open, and
``max-file-handles`` caps the table with a clear error instead of running
the agent out of descriptors.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from qga.context import Context
from qga.cstring import os_text
from qga.errors import QgaError, os_error
from qga import qbase64
from qga.guestfile import MODES, NEW_FILE_MODE, GuestFile, OpenError
from qga.codec import Base64Pieces, base64_text
from qga.command import command
from qga.schema import Alternate, Enum
from qga.log import get_logger

log = get_logger(__name__)

#: guest-file-read's default and maximum ``count`` (qemu-ga's values).
READ_COUNT_DEFAULT = 4096
READ_COUNT_MAX = 48 * 1024 * 1024
#: A big read is read and encoded this much at a time (a multiple of 3, so the
#: pieces' base64 is the whole's): peak memory is the base64, not data + base64.
_ENCODE_CHUNK = 3 << 20

GuestFileWhence = Alternate("GuestFileWhence", ["int", Enum("QGASeek", "set", "cur", "end")])
#: QGA's own numbering (0/1/2), not the host's SEEK_* values.
_WHENCE_CODES = {0: os.SEEK_SET, 1: os.SEEK_CUR, 2: os.SEEK_END}
_WHENCE_NAMES = {"set": os.SEEK_SET, "cur": os.SEEK_CUR, "end": os.SEEK_END}

class FileTable(Dict[int, GuestFile]):
    """The open guest-file handles of one agent."""


def _table(ctx: Context) -> FileTable:
    return ctx.subject(FileTable)


def _find(ctx: Context, handle: int) -> GuestFile:
    gfile = _table(ctx).get(handle)
    if gfile is None:
        raise QgaError(f"handle '{handle}' has not been found")
    return gfile


@command("guest-file-open", order=8, group="unrestricted", audit=("path", "mode"),
         args={"path": "str", "*mode": "str"})
def file_open(ctx: Context, path: str, mode: str = "r") -> int:
    """Open ``path`` with an fopen ``mode``; returns the new handle."""
    path, mode = os_text(path), os_text(mode)
    log.info("guest-file-open called, filepath: %s, mode: %s", path, mode)
    if mode not in MODES:
        raise QgaError(f"invalid file open mode '{mode}'")
    table = _table(ctx)
    limit = ctx.config.max_file_handles
    if limit and len(table) >= limit:
        raise QgaError(f"too many open guest files (max-file-handles is {limit}); "
                       "close some handles first")
    try:
        gfile = GuestFile.open(path, mode, ctx.config.file_nofollow)
    except OpenError as err:
        if err.step == "chmod":
            raise os_error(f"failed to set permission 0{NEW_FILE_MODE:03o} on new file "
                           f"'{path}' (mode: '{mode}')", err.exc, path) from None
        raise os_error(f"failed to open file '{path}' (mode: '{mode}')", err.exc, path) from None
    try:
        handle = ctx.state.next_handle()
    except QgaError:
        gfile.close()
        raise
    table[handle] = gfile
    log.info("guest-file-open, handle: %d", handle)
    ctx.audit("guest-file-open", path=path, mode=mode, handle=handle)
    return handle


@command("guest-file-close", order=9, group="unrestricted", audit=("handle",), args={"handle": "int"})
def file_close(ctx: Context, handle: int) -> None:
    """Close a handle (it is forgotten even if close(2) reports an error)."""
    log.info("guest-file-close called, handle: %d", handle)
    gfile = _find(ctx, handle)
    del _table(ctx)[handle]
    ctx.audit("guest-file-close", handle=handle, path=gfile.path)
    try:
        gfile.close()
    except OSError as exc:
        raise os_error("failed to close handle", exc) from None


@command("guest-file-read", order=10, group="unrestricted", args={"handle": "int", "*count": "int"})
def file_read(ctx: Context, handle: int, count: int = READ_COUNT_DEFAULT) -> Dict[str, Any]:
    """Read up to ``count`` bytes: ``{"count", "buf-b64", "eof"}``."""
    gfile = _find(ctx, handle)
    if not 0 <= count <= READ_COUNT_MAX:
        raise QgaError(f"value '{count}' is invalid for argument count")
    pieces: List[bytes] = []
    total = 0
    eof = False
    while total < count:
        want = min(_ENCODE_CHUNK, count - total)
        try:
            data, eof = gfile.read(want)
        except OSError as exc:
            if total and isinstance(exc, BlockingIOError):
                break   # a pipe ran dry after some data: that is the result
            raise os_error("failed to read file", exc, gfile.path) from None
        pieces.append(base64_text(data))
        total += len(data)
        if eof or len(data) < want:
            break
    text: Any = pieces[0] if len(pieces) == 1 else Base64Pieces(pieces) if pieces else b""
    return {"count": total, "buf-b64": text, "eof": eof}


@command("guest-file-write", order=11, group="unrestricted",
         args={"handle": "int", "buf-b64": "str", "*count": "int"})
def file_write(ctx: Context, handle: int, buf_b64: str,
               count: Optional[int] = None) -> Dict[str, Any]:
    """Write the decoded bytes (or the first ``count``): ``{"count", "eof"}``."""
    gfile = _find(ctx, handle)
    data = qbase64.decode(buf_b64)
    if count is None:
        count = len(data)
    elif count < 0 or count > len(data):
        raise QgaError(f"value '{count}' is invalid for argument count")
    try:
        written = gfile.write(memoryview(data)[:count])
    except OSError as exc:
        raise os_error("failed to write to file", exc, gfile.path) from None
    return {"count": written, "eof": False}


@command("guest-file-seek", order=12, group="unrestricted",
         args={"handle": "int", "offset": "int", "whence": GuestFileWhence})
def file_seek(ctx: Context, handle: int, offset: int, whence: Any) -> Dict[str, Any]:
    """Move the position: ``{"position", "eof"}`` (eof is always false after a seek)."""
    gfile = _find(ctx, handle)
    if isinstance(whence, str):
        how = _WHENCE_NAMES[whence]
    elif whence in _WHENCE_CODES:
        how = _WHENCE_CODES[whence]
    else:
        raise QgaError(f"invalid whence code {whence}")
    try:
        position = gfile.seek(offset, how)
    except OSError as exc:
        raise os_error("failed to seek file", exc, gfile.path) from None
    except OverflowError:
        raise QgaError("failed to seek file: Invalid argument") from None
    return {"position": position, "eof": False}


@command("guest-file-flush", order=13, group="unrestricted", args={"handle": "int"})
def file_flush(ctx: Context, handle: int) -> None:
    """Nothing is buffered in the agent; the handle is still checked."""
    _find(ctx, handle)
