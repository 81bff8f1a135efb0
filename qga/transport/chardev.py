"""Character-device channels inside the guest: virtio-serial and isa-serial.

A virtio port reports EOF (and POLLHUP) for as long as no host process has
the chardev open, e.g. while libvirt reconnects after a guest suspend.  The
agent then stops watching the port and reads it again 100 ms later — the
same cadence as qemu-ga, a few wake-ups a second and no spinning.  Like
qemu-ga it keeps the descriptor it opened at start and never looks at the
path again: closing the port would tell the host (VSERPORT_CHANGE) that the
agent went away.  A port that is really gone (hot-unplug) fails the next
read with ENODEV, a channel error like any other (``--retry-path`` reopens).
"""
from __future__ import annotations

import os
from typing import Any

from qga.transport.base import Transport
from qga.log import get_logger

log = get_logger(__name__)

DETACHED_POLL = 0.1


class VirtioSerial(Transport):
    """``/dev/virtio-ports/<name>``: not a tty, so plain ``os.open``."""

    def _open_fd(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)

    def open(self) -> None:
        self._attach_fd(self._open_fd())

    def on_eof(self) -> None:
        # Host detached: stop watching (POLLHUP would fire continuously) and look again soon.
        if self._reading and self.fd is not None:
            self.loop.remove_reader(self.fd)
            self._reading = False
        self.loop.call_later(DETACHED_POLL, self._recheck)

    def _recheck(self) -> None:
        if self.fd is not None:
            self._want_reading()


class IsaSerial(VirtioSerial):
    """A real serial line through pyserial: raw 8N1 at 38400, exclusive, input flushed."""

    _serial: Any = None

    def _open_fd(self) -> int:
        import serial  # lazily: only this transport needs pyserial

        try:
            ser = serial.Serial(self.path, baudrate=38400, bytesize=8, parity="N", stopbits=1,
                                timeout=0, xonxoff=False, rtscts=False, exclusive=True)
        except serial.SerialException as exc:
            errno_ = getattr(exc, "errno", None) or 5
            raise OSError(errno_, str(exc)) from None
        ser.reset_input_buffer()
        self._serial = ser
        return os.dup(ser.fileno())

    def close(self) -> None:
        super().close()
        if self._serial is not None:
            self._serial.close()
            self._serial = None
