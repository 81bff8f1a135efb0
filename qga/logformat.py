"""The log handlers :class:`qga.log.LogSetup` installs: qemu-ga's lines, or the journal.

Imported with :mod:`logging` at the first record the agent writes (see
:mod:`qga.log`), never on a quiet start.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, Dict, Optional

_LEVELS = {logging.CRITICAL: "critical", logging.ERROR: "error", logging.WARNING: "warning",
           logging.INFO: "info", logging.DEBUG: "debug"}
_SYSLOG_PRIO = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                logging.INFO: 6, logging.DEBUG: 7}


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


def _journal_module() -> Optional[Any]:
    if not os.environ.get("JOURNAL_STREAM"):
        return None
    try:
        from systemd import journal
    except ImportError:  # also when a source tree's systemd/ folder shadows the package
        return None
    return journal


def make_handler(logfile: Optional[IO[str]]) -> logging.Handler:
    """The handler for ``-l``'s open file; without one the journal, or stderr."""
    if logfile is not None:
        handler: logging.Handler = logging.StreamHandler(logfile)
        handler.setFormatter(QgaFormatter())
        return handler
    journal = _journal_module()
    if journal is not None:
        return JournalHandler(journal)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(QgaFormatter(syslog_prefix=bool(os.environ.get("JOURNAL_STREAM"))))
    return handler
