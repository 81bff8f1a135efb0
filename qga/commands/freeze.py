"""guest-fsfreeze-status/freeze/freeze-list/thaw and guest-fstrim.

Semantics are qemu-ga 10.2's (spec 2.4, 2.5, 3.5, 3.6): the hook runs before
freezing and after thawing, the ``qga.state.isfrozen`` marker is created
before the first FIFREEZE, mounts are frozen most-recent first, EOPNOTSUPP
and EBUSY are ignored, a failure part-way thaws everything and reports the
error, and a freeze that froze nothing leaves frozen mode again.

Beyond qemu-ga (documented in the README):

* ``fsfreeze-timeout`` (config, seconds): when a freeze lasts longer, the
  agent thaws by itself (in a helper thread, never on the event loop) and
  logs a critical message.  Also armed when the agent starts frozen because
  a previous instance left the marker.
* When the agent stops while frozen (SIGTERM with ``frozen-sigterm=thaw``,
  or a fatal channel error) it thaws first, as qemu-ga's clean-up does.

Freeze and thaw have no command deadline: abandoning them half way would
leave the guest in an unknown state.  guest-fstrim has none either: FITRIM
cannot be interrupted and can legitimately take minutes on large disks.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from typing import Any, Dict, List, Optional

from qga.context import CONTEXT_HOOKS, Context
from qga.cstring import os_text
from qga.errors import QgaError
from qga.linux import fsfreeze as fs
from qga.linux.helpers import run_helper
from qga.linux.mounts import Mount, list_mounts
from qga.registry import command

log = logging.getLogger(__name__)

#: How long the shutdown thaw waits for a freeze/thaw in progress.
SHUTDOWN_LOCK_WAIT = 30.0


class FreezeState:
    """Per-agent freeze bookkeeping (serialises worker, timer and shutdown)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.timer: Any = None
        #: Bumped on every freeze and thaw so a stale auto-thaw does nothing.
        self.generation = 0


def _state(ctx: Context) -> FreezeState:
    return ctx.store("fsfreeze", FreezeState)


def _mounts() -> List[Mount]:
    try:
        return list_mounts()
    except OSError:
        raise QgaError("failed to open mtab file: '/proc/self/mounts'") from None


def _run_hook(ctx: Context, arg: str) -> None:
    hook = ctx.config.fsfreeze_hook
    if not hook:
        return
    log.info("executing fsfreeze hook with arg '%s'", arg)
    # Unlike qemu-ga, a hook that hangs is killed (its whole session) after
    # fsfreeze-hook-timeout seconds, so a freeze cannot wedge the agent forever.
    run_helper([hook, arg], "execute fsfreeze hook", timeout=ctx.config.fsfreeze_hook_timeout or None)


def _freeze_mounts(mounts: List[Mount], wanted: Optional[List[str]]) -> int:
    """FIFREEZE in reverse mount order; QgaError on the first real failure."""
    count = 0
    for mount in reversed(mounts):
        if wanted is not None and mount.dirname not in wanted:
            continue
        try:
            fd = fs.open_mount(mount.dirname)
        except OSError as exc:
            raise QgaError(f"failed to open {mount.dirname}: {exc.strerror}") from None
        try:
            fs.freeze(fd)
            count += 1
        except OSError as exc:
            # Filesystems without freeze support, and already frozen ones
            # (a bind mount of a frozen filesystem), are not counted.
            if exc.errno not in (errno.EOPNOTSUPP, errno.EBUSY):
                raise QgaError(f"failed to freeze {mount.dirname}: {exc.strerror}") from None
        finally:
            _close(fd)
    return count


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _thaw_mounts(mounts: List[Mount]) -> int:
    count = 0
    for mount in mounts:
        try:
            fd = fs.open_mount(mount.dirname)
        except OSError:
            continue  # qemu-ga skips mounts it cannot open
        try:
            if fs.thaw_all_levels(fd):
                count += 1
        finally:
            _close(fd)
    return count


def do_freeze(ctx: Context, mountpoints: Optional[List[str]]) -> int:
    """The body of guest-fsfreeze-freeze(-list)."""
    st = _state(ctx)
    with st.lock:
        _run_hook(ctx, "freeze")
        mounts = _mounts()
        ctx.set_frozen(True)  # marker first: a crash from here on restarts frozen
        st.generation += 1
        try:
            count = _freeze_mounts(mounts, mountpoints)
        except QgaError:
            _thaw_quietly(ctx, "freeze failed part-way")
            raise
        if count == 0:
            ctx.set_frozen(False)  # nothing frozen; the thaw hook does not run
        else:
            _schedule_timer(ctx, st.generation)
        return count


def do_thaw(ctx: Context) -> int:
    """The body of guest-fsfreeze-thaw: FITHAW everything, leave frozen mode, hook."""
    with _state(ctx).lock:
        return _thaw_unlocked(ctx)


def _thaw_unlocked(ctx: Context) -> int:
    st = _state(ctx)
    st.generation += 1
    if st.timer is not None:
        st.timer.cancel()  # only sets a flag: safe from any thread
        st.timer = None
    count = _thaw_mounts(_mounts())
    ctx.set_frozen(False)
    log.info("guest-fsthaw called")
    _run_hook(ctx, "thaw")
    return count


def _thaw_quietly(ctx: Context, why: str) -> int:
    """Thaw and run the hook (caller holds the lock or gave up on it), logging errors."""
    try:
        return _thaw_unlocked(ctx)
    except QgaError as err:
        if ctx.frozen:  # the mount list failed: at least leave nothing gated
            log.error("%s: thaw failed: %s", why, err.desc)
        else:
            log.error("%s: thawed, but: %s", why, err.desc)
        return 0


# -- auto-thaw ----------------------------------------------------------------
def _schedule_timer(ctx: Context, generation: int) -> None:
    timeout = ctx.config.fsfreeze_timeout
    if timeout > 0:
        ctx.loop.call_soon_threadsafe(_arm_timer, ctx, generation, timeout)


def _arm_timer(ctx: Context, generation: int, timeout: float) -> None:
    """Loop thread: start the freeze time limit."""
    st = _state(ctx)
    if st.generation != generation or not ctx.frozen:
        return
    if st.timer is not None:
        st.timer.cancel()
    st.timer = ctx.loop.call_later(timeout, _timer_expired, ctx, generation, timeout)


def _timer_expired(ctx: Context, generation: int, timeout: float) -> None:
    """Loop thread: the thaw itself (hook included) runs in its own thread."""
    threading.Thread(target=_auto_thaw, args=(ctx, generation, timeout),
                     name="qga-auto-thaw", daemon=True).start()


def _auto_thaw(ctx: Context, generation: int, timeout: float) -> None:
    st = _state(ctx)
    with st.lock:
        if st.generation != generation or not ctx.frozen:
            return  # thawed (or re-frozen) meanwhile
        count = _thaw_quietly(ctx, "fsfreeze-timeout")
    # Logging is suspended while frozen: these records come after the thaw.
    log.critical("filesystems were frozen for longer than fsfreeze-timeout (%g s): "
                 "the agent thawed %d filesystem(s) by itself", timeout, count)
    ctx.audit("fsfreeze auto-thaw", timeout=timeout, thawed=count)


def _on_new_context(ctx: Context) -> None:
    """Per-agent hooks: thaw on the way out; arm the limit if we start frozen."""
    ctx.on_shutdown(lambda: _shutdown_thaw(ctx))
    # Runs once the loop starts, after the agent has read the frozen marker.
    ctx.loop.call_soon_threadsafe(_start_frozen_timer, ctx)


def _start_frozen_timer(ctx: Context) -> None:
    if ctx.frozen:
        timeout = ctx.config.fsfreeze_timeout
        if timeout > 0:
            _arm_timer(ctx, _state(ctx).generation, timeout)


def _shutdown_thaw(ctx: Context) -> None:
    if not ctx.frozen:
        return
    st = _state(ctx)
    locked = st.lock.acquire(timeout=SHUTDOWN_LOCK_WAIT)
    try:
        if ctx.frozen:
            count = _thaw_quietly(ctx, "agent stopping while frozen")
            log.warning("agent stopping while frozen: thawed %d filesystem(s) first", count)
    finally:
        if locked:
            st.lock.release()


CONTEXT_HOOKS.append(_on_new_context)


# -- commands -------------------------------------------------------------------
@command("guest-fsfreeze-status", group="fsfreeze", inline=True)
def fsfreeze_status(ctx: Context) -> str:
    """The agent's own view ("frozen"/"thawed"), not a kernel query."""
    return "frozen" if ctx.frozen else "thawed"


@command("guest-fsfreeze-freeze", group="fsfreeze", deadline=None, audit=True)
def fsfreeze_freeze(ctx: Context) -> int:
    """Freeze every freezable mount; returns how many were frozen."""
    log.info("guest-fsfreeze called")
    ctx.audit("guest-fsfreeze-freeze")
    return do_freeze(ctx, None)


@command("guest-fsfreeze-freeze-list", group="fsfreeze", deadline=None, audit=True,
         args={"*mountpoints": ["str"]})
def fsfreeze_freeze_list(ctx: Context, mountpoints: Optional[List[str]] = None) -> int:
    """Freeze the listed mount points (exact string match; unknown ones ignored)."""
    log.info("guest-fsfreeze called")
    ctx.audit("guest-fsfreeze-freeze-list", mountpoints=mountpoints)
    wanted = None if mountpoints is None else [os_text(m) for m in mountpoints]
    return do_freeze(ctx, wanted)


@command("guest-fsfreeze-thaw", group="fsfreeze", deadline=None, audit=True)
def fsfreeze_thaw(ctx: Context) -> int:
    """Thaw every mount (FITHAW until it fails); returns how many were thawed."""
    try:
        count = do_thaw(ctx)
    except QgaError as err:
        ctx.audit("guest-fsfreeze-thaw", error=err.desc)
        raise
    ctx.audit("guest-fsfreeze-thaw", thawed=count)
    return count


@command("guest-fstrim", group="fsfreeze", deadline=None, audit=True,
         args={"*minimum": "int"})
def fstrim(ctx: Context, minimum: int = 0) -> Dict[str, Any]:
    """FITRIM every mount; per-mount results in reverse mount order."""
    log.info("guest-fstrim called")
    ctx.audit("guest-fstrim", minimum=minimum)
    results: List[Dict[str, Any]] = []
    for mount in _mounts():
        entry: Dict[str, Any] = {"path": mount.dirname}
        results.append(entry)
        try:
            fd = fs.open_mount(mount.dirname)
        except OSError as exc:
            entry["error"] = f"failed to open: {exc.strerror}"
            continue
        try:
            entry["trimmed"], entry["minimum"] = fs.trim(fd, minimum)
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP):
                entry["error"] = "trim not supported"
            else:
                entry["error"] = f"failed to trim: {exc.strerror}"
        finally:
            _close(fd)
    results.reverse()
    return {"paths": results}
