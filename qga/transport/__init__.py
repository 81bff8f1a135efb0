"""Channels between the host and the agent, chosen by ``-m``."""
from __future__ import annotations

import os
import _socket  # not socket, as in qga.transport.listen
from typing import Callable, Dict, Optional, Tuple

from qga.errors import InternalError
from qga.loop import Loop
from qga.transport.base import Transport
from qga.transport.chardev import IsaSerial, VirtioSerial
from qga.transport.listen import UnixListen, VsockListen

# Callable, not Type[Transport]: only the listening ones take listen_fd.
_CLASSES: Dict[str, Callable[..., Transport]] = {
    "virtio-serial": VirtioSerial,
    "isa-serial": IsaSerial,
    "unix-listen": UnixListen,
    "vsock-listen": VsockListen,
}


class ActivationError(InternalError):
    """Socket activation handed us something we cannot use."""


def socket_activation() -> Optional[Tuple[str, int]]:
    """(method, fd) when systemd passed a listening socket (LISTEN_PID/LISTEN_FDS)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or "LISTEN_FDS" not in os.environ:
        return None
    if os.environ["LISTEN_FDS"] != "1":
        raise ActivationError("qemu-ga only supports listening on one socket")
    fd = 3
    family = _family(fd)
    if family == _socket.AF_UNIX:
        return "unix-listen", fd
    if family == getattr(_socket, "AF_VSOCK", -1):
        return "vsock-listen", fd
    raise ActivationError("unsupported listen fd type")


def _family(fd: int) -> int:
    sock = _socket.socket(fileno=fd)
    try:
        return sock.family
    finally:
        sock.detach()


def make_transport(method: str, path: str, loop: Loop, on_data: Callable[[memoryview], None],
                   on_error: Callable[[str], None], listen_fd: Optional[int] = None,
                   read_buffer: Optional[Callable[[int], memoryview]] = None) -> Transport:
    """The transport for ``-m method``; call ``open()`` on it (see :class:`Transport`
    for ``on_data`` and ``read_buffer``)."""
    cls = _CLASSES[method]
    if listen_fd is not None:
        return cls(loop, path, on_data, on_error, read_buffer, listen_fd=listen_fd)
    return cls(loop, path, on_data, on_error, read_buffer)
