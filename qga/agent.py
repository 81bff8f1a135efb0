"""The agent: state, channel, parser, dispatcher and signals around one loop."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
from typing import Optional

from qga import memtrim, sdnotify
from qga.commands import Catalog
from qga.errors import InternalError
from qga.config import Config
from qga.context import Context
from qga.dispatch import Dispatcher
from qga.codec import JsonStreamParser, Reply
from qga.codec.parser import FAST_MESSAGE
from qga.log import LogSetup, get_logger
from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir, StateError
from qga.transport import ActivationError, make_transport, socket_activation
from qga.transport.base import Transport

log = get_logger("qga")

RETRY_INTERVAL = 5.0  # seconds between channel attempts with -r (qemu-ga's QGA_RETRY_INTERVAL)
#: Stop reading the channel while this many requests wait (backpressure)...
MAX_BACKLOG = 1024
#: ... and read again once the queue is this short.
RESUME_BACKLOG = 64
#: After requests arrive, give freed memory back to the system TRIM_DELAY
#: seconds later (once their replies have left); pending trims coalesce, so
#: there is at most one a second under any load.
TRIM_DELAY = 1.0

FROZEN_AT_START = (
    "previous instance appears to have exited with frozen filesystems. deferring "
    "logging/pidfile creation and disabling non-fsfreeze-safe commands until "
    "guest-fsfreeze-thaw is issued, or filesystems are manually unfrozen and the file "
    "{} is removed")


class StartupError(InternalError):
    """The agent cannot start; each line of the message is printed."""


class PidFile:
    """A locked pid file: a second agent with the same file refuses to start."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        """Create, lock and fill the file (0600, never through a symlink)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"Cannot open pid file, {exc.strerror}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"Cannot lock pid file, {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Remove the file (only ours: we hold the lock)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def daemonize() -> None:
    """Fork; the parent exits 0 at once, the child detaches from the terminal."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    os.umask(0o077)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


class Agent:
    """One running guest agent."""

    def __init__(self, config: Config, logs: Optional[LogSetup] = None,
                 registry: Optional[Registry] = None) -> None:
        self.config = config
        self.logs = logs
        self.loop = Loop()
        self.state = StateDir(config.statedir)
        # Command modules are imported when first called (see qga.commands).
        catalog = Catalog()
        self.registry = registry if registry is not None else \
            Registry(catalog, extensions=config.extension_commands)
        self.registry.configure(config.allow_rpcs, config.block_rpcs, config.block_groups)
        self.ctx = Context(config, self.state, self.loop, self.registry, logs.gate if logs else None)
        catalog.bind(self.ctx)
        self.parser = JsonStreamParser()
        # The lexer's fast-path regex is compiled once the first reply has
        # left (see _on_data): compiling it would be a fifth of the start-up.
        FAST_MESSAGE.defer()
        self._fast_path_pending = True
        self.dispatcher = Dispatcher(self.ctx, self._send, config.command_timeout)
        self.transport: Optional[Transport] = None
        self.pidfile: Optional[PidFile] = None
        self.exit_code = 0
        self._listen_fd: Optional[int] = None
        self._method = config.method
        self._paused = False
        self._trim_pending = False

    # -- start-up ----------------------------------------------------------------
    def _load_state(self) -> None:
        frozen = self.state.frozen_marker_exists()
        try:
            self.state.load(create=not frozen)
        except StateError as exc:
            raise StartupError(f"{exc}\nfailed to load persistent state") from None
        if frozen:
            log.warning(FROZEN_AT_START.format(self.state.frozen_path))  # said before the gate closes
            self.ctx.set_frozen(True, marker=False)
        else:
            self.state.forget_freeze_start()

    def _open_channel(self) -> bool:
        """Open the channel; False (and a retry scheduled) when ``-r`` allows waiting."""
        path = self.config.effective_path() or ""
        self.transport = make_transport(self._method, path, self.loop, self._on_data,
                                        self._on_channel_error, self._listen_fd, self.parser.read_buffer)
        try:
            self.transport.open()
            return True
        except OSError as exc:
            self.transport = None
            if not self.config.retry_path:
                raise StartupError(f"error opening channel '{path}': {exc.strerror or exc}\n"
                                   "failed to create guest agent channel\n"
                                   "failed to initialize guest agent channel") from None
            log.warning("waiting for channel path... (%s: %s)", path, exc.strerror or exc)
            self.loop.call_later(RETRY_INTERVAL, self._retry_open)
            return False

    def _retry_open(self) -> None:
        # With --retry-path, _open_channel schedules the next attempt itself.
        if self._open_channel():
            log.warning("channel %s opened", self.config.effective_path())
            self._status("ready")

    def _on_channel_error(self, reason: str) -> None:
        if not self.config.retry_path:
            log.error("%s: stopping", reason)
            self.loop.stop()
            return
        log.warning("agent stopped unexpectedly, restarting... (%s)", reason)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.loop.call_later(RETRY_INTERVAL, self._retry_open)

    def _setup_signals(self) -> None:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGCHLD, lambda _: self.loop.reap_children())
        self.loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self, _signum: int) -> None:
        if self.logs:
            self.logs.reopen()

    def _on_stop_signal(self, signum: int) -> None:
        if self.registry.frozen and self.config.frozen_sigterm == "ignore":
            log.warning("received signal %d while frozen: ignored (frozen-sigterm=ignore)", signum)
            return
        log.debug("received signal num %d, quitting", signum)
        self.loop.stop()

    def _on_frozen(self, frozen: bool) -> None:
        if not frozen and self.pidfile is None and self._wants_pidfile():
            self._acquire_pidfile()  # deferred while frozen, as qemu-ga does
        self._status("filesystems frozen" if frozen else "filesystems thawed")

    def _wants_pidfile(self) -> bool:
        return self.config.daemon or self.config.pidfile_given

    def _acquire_pidfile(self) -> None:
        pidfile = PidFile(self.config.pidfile)
        pidfile.acquire()
        self.pidfile = pidfile

    def _status(self, text: str) -> None:
        sdnotify.status(text)

    # -- data path ---------------------------------------------------------------
    def _on_data(self, data: memoryview) -> None:
        # Only the open transport calls this; keep it even if a channel error
        # drops self.transport while the chunk is dispatched.
        transport = self.transport
        assert transport is not None
        # The replies to everything in this chunk leave in one writev.
        transport.cork()
        try:
            self.dispatcher.submit(self.parser.feed(data))
        finally:
            transport.uncork()
        if self.dispatcher.backlog > MAX_BACKLOG and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._note_traffic()
        if self._fast_path_pending:
            self._fast_path_pending = False
            self.loop.call_later(0, FAST_MESSAGE.compile)

    def _send(self, data: Reply) -> None:
        if self.transport is not None:
            self.transport.write(data)
            if self._paused and self.dispatcher.backlog < RESUME_BACKLOG:
                self._paused = False
                self.transport.resume_reading()

    def _note_traffic(self) -> None:
        if not self._trim_pending:
            self._trim_pending = True
            self.loop.call_later(TRIM_DELAY, self._trim)

    def _trim(self) -> None:
        self._trim_pending = False
        self.parser.release_memory()
        memtrim.release()

    def _housekeeping(self, interval: float) -> None:
        sdnotify.watchdog_ping()
        self.loop.call_later(interval, self._housekeeping, interval)

    # -- main --------------------------------------------------------------------
    def run(self) -> int:
        """Run until a stop signal or a fatal channel error; return the exit status."""
        try:
            return self._run()
        except StartupError as exc:
            for line in str(exc).splitlines():
                print(line, file=sys.stderr)
            return 1

    def _run(self) -> int:
        self._load_state()
        try:
            activation = socket_activation()
        except ActivationError as exc:
            raise StartupError(str(exc)) from None
        if activation is not None:
            self._method, self._listen_fd = activation
        self._open_channel()
        if self.config.daemon:
            daemonize()
        if self._wants_pidfile() and not self.registry.frozen:
            self._acquire_pidfile()
        self.ctx.frozen_listeners.append(self._on_frozen)
        self._setup_signals()
        interval = sdnotify.watchdog_interval()
        if interval:
            self.loop.call_later(interval, self._housekeeping, interval)
        sdnotify.ready("frozen (previous instance)" if self.registry.frozen else "ready")
        try:
            self.loop.run()
        finally:
            self._shutdown()
        return self.exit_code

    def _shutdown(self) -> None:
        sdnotify.stopping()
        self.ctx.run_shutdown_hooks()
        self.dispatcher.worker.stop()
        if self.transport is not None:
            self.transport.close()
        if self.pidfile is not None:
            self.pidfile.release()
        self.loop.close()
