"""systemd readiness and watchdog notifications (``sd_notify(3)``).

The agent runs as ``Type=notify`` under systemd: it must send ``READY=1`` once
the channel is open, ``STATUS=...`` on state changes, ``WATCHDOG=1`` from its
event loop when ``WatchdogSec=`` is set, and ``STOPPING=1`` on shutdown.

``systemd.daemon.notify`` (systemd-python) is used when it imports; otherwise a
pure-Python sender writes one datagram to ``$NOTIFY_SOCKET``.  The protocol is
tiny and stable, so the fallback is a complete implementation, not a stub.

This module is imported at agent start-up, whose duration is benchmarked:
only ``os`` is imported at module level; ``socket`` and systemd-python are
imported on first use (and only when ``$NOTIFY_SOCKET`` is set at all).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

__all__ = [
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog_ping",
    "watchdog_interval",
    "send_datagram",
]

#: Sentinel: the backend has not been probed yet.
_UNPROBED: Any = object()

#: ``systemd.daemon.notify`` when importable, ``None`` when not, ``_UNPROBED``
#: before the first call.  Tests may set it to ``None`` to force the fallback.
_systemd_notify: Any = _UNPROBED


def _probe_systemd() -> Optional[Callable[..., bool]]:
    """Return ``systemd.daemon.notify`` or ``None``.

    ``ImportError`` (not only ``ModuleNotFoundError``) must be caught: with the
    source tree on ``sys.path`` and systemd-python absent, our top-level
    ``systemd/`` folder (unit files) is importable as a *namespace package*,
    and ``from systemd import daemon`` then raises a plain ``ImportError``.
    """
    try:
        from systemd import daemon
    except ImportError:
        return None
    func = getattr(daemon, "notify", None)
    return func if callable(func) else None


def _socket_address(value: str) -> Optional[str]:
    """Translate ``$NOTIFY_SOCKET`` to an ``AF_UNIX`` address, or ``None``.

    ``@name`` means the abstract namespace (leading NUL byte); anything else
    must be an absolute path.  Other forms (e.g. ``vsock:...`` of newer
    systemd versions) are not meaningful for a guest agent and are ignored.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def send_datagram(address: str, payload: bytes) -> bool:
    """Send one datagram to ``address`` (``$NOTIFY_SOCKET`` syntax).

    Returns ``False`` instead of raising: a failed notification must never
    take the agent down (systemd will act on the missing READY/WATCHDOG).
    """
    addr = _socket_address(address)
    if addr is None:
        return False
    import socket  # deferred: keeps agent start-up cheap

    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError:
        return False
    try:
        # connect()+sendall() rather than sendto(): identical on the wire, and
        # a connect error (no listener) is reported separately from a send one.
        sock.connect(addr)
        sock.sendall(payload)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1\\nSTATUS=waiting for host"``).

    Returns ``True`` when the message was delivered to ``$NOTIFY_SOCKET``,
    ``False`` when the variable is unset (not running under systemd with
    ``Type=notify``) or delivery failed.
    """
    global _systemd_notify
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if _systemd_notify is _UNPROBED:
        _systemd_notify = _probe_systemd()
    if _systemd_notify is not None:
        try:
            return bool(_systemd_notify(message))
        except (OSError, ValueError):
            # Fall through to our own sender rather than lose the message.
            pass
    return send_datagram(address, message.encode("utf-8"))


def ready(status_text: Optional[str] = None) -> bool:
    """``READY=1``, optionally with a ``STATUS=`` line in the same datagram."""
    msg = "READY=1"
    if status_text:
        msg += "\nSTATUS=" + _one_line(status_text)
    return notify(msg)


def status(text: str) -> bool:
    """``STATUS=<text>`` (shown by ``systemctl status``)."""
    return notify("STATUS=" + _one_line(text))


def stopping() -> bool:
    """``STOPPING=1``: the agent is shutting down on purpose."""
    return notify("STOPPING=1")


def watchdog_ping() -> bool:
    """``WATCHDOG=1``: keep-alive for ``WatchdogSec=``."""
    return notify("WATCHDOG=1")


def _one_line(text: str) -> str:
    """Newlines would start a new ``KEY=`` assignment: replace them."""
    return text.replace("\n", " ")


def watchdog_interval() -> Optional[float]:
    """Seconds between ``WATCHDOG=1`` pings, or ``None`` if no watchdog.

    systemd exports ``$WATCHDOG_USEC`` (the timeout) and ``$WATCHDOG_PID`` (the
    process it is meant for).  As ``sd_watchdog_enabled(3)`` recommends, ping
    at half the timeout.  ``None`` when the variable is unset or invalid, or
    when ``$WATCHDOG_PID`` names another process (e.g. the variables leaked
    into a child such as a guest-exec command).
    """
    usec_text = os.environ.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid_text = os.environ.get("WATCHDOG_PID")
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000.0
