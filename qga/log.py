"""Where log records go, and the frozen-mode gate.

Destinations, in order: ``-l FILE`` (qemu-ga's ``<sec>.<usec>: <level>:
<message>`` lines); the journal, with structured fields, when stderr is
connected to journald and systemd-python imports; stderr with ``<N>``
priority prefixes under journald without systemd-python; plain qemu-ga lines
on stderr otherwise (:mod:`qga.logformat`).

While filesystems are frozen nothing may be written (the log file or the
journal may sit on a frozen filesystem and block the agent), so records are
held in a bounded buffer and written after the thaw.  The audit logger
(``qga.audit``) is always on, whatever the verbosity.

Importing :mod:`logging` costs a tenth of the agent's start-up, and a quiet
start logs nothing.  So the agent's modules log through :func:`get_logger`,
whose loggers import it at the first record that would be written (the
:class:`LogSetup` then puts its handler in first); a record below the
agent's level is dropped without it.  Once logging is imported, by anyone,
every record goes to it and its levels decide.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import IO, TYPE_CHECKING, Any, Callable, Deque, Optional

if TYPE_CHECKING:
    import logging

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
FROZEN_BUFFER = 1000
AUDIT = "qga.audit"

#: The lowest level written while logging is not imported (the LogSetup's).
_threshold = WARNING
#: The LogSetup whose handler goes in when logging is first needed.
_pending: Optional["LogSetup"] = None
_install_lock = threading.Lock()


def _logging() -> Any:
    """The logging module, with the pending LogSetup installed (or a NullHandler on "qga")."""
    import logging

    if _pending is not None:
        _pending.install()
    elif not logging.getLogger("qga").handlers:
        # A library without a LogSetup (the tests, the host side) stays quiet.
        logging.getLogger("qga").addHandler(logging.NullHandler())
    return logging


#: Logger method -> the level it writes at.
_METHODS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "exception": ERROR,
            "critical": CRITICAL}


def _until_taken(method: str) -> Callable[..., None]:
    """:class:`Logger`'s ``method`` for the time before it takes its logging.Logger."""
    level = _METHODS[method]

    def call(self: "Logger", msg: str, *args: Any, **kwargs: Any) -> None:
        # Below the threshold and before logging is imported, the record is dropped
        # here: the usual case (a debug record of a quiet agent) costs no call.
        if level < (self._floor or _threshold) and "logging" not in sys.modules:
            return
        # stacklevel=2: the record names the caller, not this function.
        getattr(self._take(), method)(msg, *args, stacklevel=2, **kwargs)

    call.__name__ = method
    call.__doc__ = f"As :meth:`logging.Logger.{method}`."
    return call


class Logger:
    """A :class:`logging.Logger` for ``name``, taken when a record is first written.

    From then on its methods are the logging.Logger's own (instance
    attributes): a call costs what it would without this class.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: The audit records are written whatever the verbosity.
        self._floor = INFO if name == AUDIT or name.startswith(AUDIT + ".") else None

    def _take(self) -> "logging.Logger":
        """Take the logging.Logger: from now on its methods are this object's."""
        logger: "logging.Logger" = _logging().getLogger(self.name)
        for method in _METHODS:
            setattr(self, method, getattr(logger, method))
        return logger

    debug = _until_taken("debug")
    info = _until_taken("info")
    warning = _until_taken("warning")
    error = _until_taken("error")
    exception = _until_taken("exception")  # in an ``except`` block
    critical = _until_taken("critical")


def get_logger(name: str) -> Logger:
    """The agent's logger ``name`` (use instead of :func:`logging.getLogger`)."""
    return Logger(name)


class FrozenGate:
    """Holds records back while frozen; :meth:`set_frozen` writes them after the thaw.

    A filter of the LogSetup's handler (logging takes any object with a
    ``filter`` method).
    """

    def __init__(self, setup: "LogSetup") -> None:
        self.setup = setup
        self.frozen = False
        self.held: Deque["logging.LogRecord"] = deque(maxlen=FROZEN_BUFFER)
        self.dropped = 0

    def filter(self, record: "logging.LogRecord") -> bool:
        """Let ``record`` through, or hold it while frozen."""
        if not self.frozen:
            return True
        if len(self.held) == self.held.maxlen:
            self.dropped += 1
        self.held.append(record)
        return False

    def set_frozen(self, frozen: bool) -> None:
        """Close or open the gate; opening writes what was held."""
        if frozen:
            # Import what a record needs before the filesystems freeze: an
            # import then could block writing its bytecode cache.
            self.setup.install()
        self.frozen = frozen
        if frozen:
            return
        held, self.held = list(self.held), deque(maxlen=FROZEN_BUFFER)
        handler = self.setup.handler
        for record in held:
            if handler is not None:
                handler.handle(record)
        if self.dropped:
            get_logger("qga").warning("%d log records were dropped while frozen", self.dropped)
            self.dropped = 0


class LogSetup:
    """The agent's logging: one handler, the frozen gate, reopen on SIGHUP.

    The log file is opened at once (an error stops the agent at start, as
    qemu-ga does); the handler goes in with logging, at the first record.
    """

    def __init__(self, logfile: Optional[str], verbose: bool) -> None:
        global _pending, _threshold
        self.logfile = logfile
        self.verbose = verbose
        self._stream = self._open()
        self.handler: Optional["logging.Handler"] = None
        self.gate = FrozenGate(self)
        _threshold = DEBUG if verbose else WARNING
        _pending = self
        if "logging" in sys.modules:  # imported already (by the journal, say): nothing to save
            self.install()

    def _open(self) -> Optional[IO[str]]:
        if not self.logfile:
            return None
        # The handler owns the stream until reopen() or exit: no with-block.
        stream = open(self.logfile, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        os.set_inheritable(stream.fileno(), False)
        return stream

    def _new_handler(self) -> "logging.Handler":
        from qga.logformat import make_handler

        handler = make_handler(self._stream)
        handler.addFilter(self.gate)
        return handler

    def install(self) -> None:
        """Import logging and put this setup's handler on the ``qga`` logger (once)."""
        global _pending
        import logging

        with _install_lock:
            if _pending is self:
                _pending = None
            if self.handler is not None:
                return
            self.handler = self._new_handler()
            root = logging.getLogger("qga")
            for old in list(root.handlers):
                root.removeHandler(old)
            root.addHandler(self.handler)
            root.setLevel(logging.DEBUG if self.verbose else logging.WARNING)
            root.propagate = False
            logging.getLogger(AUDIT).setLevel(logging.INFO)
            logging.Formatter.converter = time.gmtime

    def reopen(self) -> None:
        """Reopen the log file (after logrotate moved it)."""
        if not self.logfile or self.gate.frozen:
            return
        self._stream = self._open()
        old = self.handler
        if old is None:  # not installed yet: it will write the new file
            return
        import logging

        self.handler = self._new_handler()
        root = logging.getLogger("qga")
        root.addHandler(self.handler)
        root.removeHandler(old)
        old.close()
