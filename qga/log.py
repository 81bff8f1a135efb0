"""Where log records go, and the frozen-mode gate.

Destinations, in order: ``-l FILE`` (qemu-ga's ``<sec>.<usec>: <level>:
<message>`` lines); the journal, with structured fields, when stderr is
connected to journald and systemd-python imports; stderr with ``<N>``
priority prefixes under journald without systemd-python; plain qemu-ga lines
on stderr otherwise.

While filesystems are frozen nothing may be written (the log file or the
journal may sit on a frozen filesystem and block the agent), so records are
held in a bounded buffer and written after the thaw.  The audit logger
(``qga.audit``) is always on, whatever the verbosity.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from typing import Any, Deque, Dict, Optional

_LEVELS = {logging.CRITICAL: "critical", logging.ERROR: "error", logging.WARNING: "warning",
           logging.INFO: "info", logging.DEBUG: "debug"}
_SYSLOG_PRIO = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                logging.INFO: 6, logging.DEBUG: 7}
FROZEN_BUFFER = 1000


def _fields_text(record: logging.LogRecord) -> str:
    fields: Dict[str, Any] = getattr(record, "qga_fields", None) or {}
    return "".join(f" {k}={v!r}" for k, v in fields.items())


class QgaFormatter(logging.Formatter):
    """qemu-ga's line format, optionally with a syslog ``<N>`` prefix."""

    def __init__(self, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage() + _fields_text(record)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.syslog_prefix:
            prio = _SYSLOG_PRIO.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines())
        level = _LEVELS.get(record.levelno, "message")
        return f"{record.created:.6f}: {level}: {text}"


class JournalHandler(logging.Handler):
    """Sends records to journald with QGA_* fields (systemd-python's journal.send)."""

    def __init__(self, journal: Any) -> None:
        super().__init__()
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {f"QGA_{k.upper()}": str(v)
                      for k, v in (getattr(record, "qga_fields", None) or {}).items()}
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.journal.send(message, PRIORITY=str(_SYSLOG_PRIO.get(record.levelno, 6)),
                              SYSLOG_IDENTIFIER="qemu-ga-py", LOGGER=record.name, **fields)
        except Exception:
            self.handleError(record)


class FrozenGate(logging.Filter):
    """Holds records back while frozen; :meth:`release` writes them after the thaw."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler
        self.frozen = False
        self.held: Deque[logging.LogRecord] = deque(maxlen=FROZEN_BUFFER)
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.frozen:
            return True
        if len(self.held) == self.held.maxlen:
            self.dropped += 1
        self.held.append(record)
        return False

    def set_frozen(self, frozen: bool) -> None:
        """Close or open the gate; opening writes what was held."""
        self.frozen = frozen
        if frozen:
            return
        held, self.held = list(self.held), deque(maxlen=FROZEN_BUFFER)
        for record in held:
            self.handler.handle(record)
        if self.dropped:
            logging.getLogger("qga").warning("%d log records were dropped while frozen", self.dropped)
            self.dropped = 0


def _journal_module() -> Optional[Any]:
    if not os.environ.get("JOURNAL_STREAM"):
        return None
    try:
        from systemd import journal
    except ImportError:  # also when a source tree's systemd/ folder shadows the package
        return None
    return journal


class LogSetup:
    """The agent's logging: one handler, the frozen gate, reopen on SIGHUP."""

    def __init__(self, logfile: Optional[str], verbose: bool) -> None:
        self.logfile = logfile
        self.handler = self._make_handler()
        self.gate = FrozenGate(self.handler)
        self.handler.addFilter(self.gate)
        root = logging.getLogger("qga")
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG if verbose else logging.WARNING)
        root.propagate = False
        logging.getLogger("qga.audit").setLevel(logging.INFO)
        logging.Formatter.converter = time.gmtime

    def _make_handler(self) -> logging.Handler:
        if self.logfile:
            # The handler owns the stream until reopen() or exit: no with-block.
            stream = open(self.logfile, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            os.set_inheritable(stream.fileno(), False)
            handler: logging.Handler = logging.StreamHandler(stream)
            handler.setFormatter(QgaFormatter())
            return handler
        journal = _journal_module()
        if journal is not None:
            return JournalHandler(journal)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(QgaFormatter(syslog_prefix=bool(os.environ.get("JOURNAL_STREAM"))))
        return handler

    def reopen(self) -> None:
        """Reopen the log file (after logrotate moved it)."""
        if not self.logfile or self.gate.frozen:
            return
        old = self.handler
        self.handler = self._make_handler()
        self.handler.addFilter(self.gate)
        self.gate.handler = self.handler
        root = logging.getLogger("qga")
        root.addHandler(self.handler)
        root.removeHandler(old)
        old.close()
