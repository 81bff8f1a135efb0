"""guest-fsfreeze-status/freeze/freeze-list/thaw and guest-fstrim.

Semantics are qemu-ga 10.2's (spec 2.4, 2.5, 3.5, 3.6): the hook runs before
freezing and after thawing, the ``qga.state.isfrozen`` marker is created
before the first FIFREEZE, mounts are frozen most-recent first, EOPNOTSUPP
and EBUSY are ignored, a failure part-way thaws everything and reports the
error, and a freeze that froze nothing leaves frozen mode again.

Beyond qemu-ga (documented in the README):

* ``fsfreeze-timeout`` (config, seconds, default 600): when a freeze lasts
  longer, the agent thaws by itself (in a helper thread, never on the event
  loop), logs a critical message and an audit record.  The limit counts from
  the freeze itself, also when the agent starts frozen because a previous
  instance left the marker: the start is recorded beside it (see
  :mod:`qga.state`).  While frozen, systemd's STATUS= shows the time left.
* When the agent stops while frozen (SIGTERM with ``frozen-sigterm=thaw``,
  or a fatal channel error) it thaws first, as qemu-ga's clean-up does.
* ``fsfreeze-exclude``: mounts guest-fsfreeze-freeze (freeze all) leaves
  alone, logged at each freeze; guest-fsfreeze-freeze-list is unaffected.
* A hook not owned by root (or the agent's user) or writable by group or
  others is refused before anything is frozen, and killed after
  ``fsfreeze-hook-timeout``.

Freeze and thaw have no command deadline: abandoning them half way would
leave the guest in an unknown state.  guest-fstrim has none either: FITRIM
cannot be interrupted and can legitimately take minutes on large disks.
"""
from __future__ import annotations

import contextlib
import errno
import os
import threading
from typing import Any, Dict, List, Optional

from qga import sdnotify
from qga.commands.failures import helper_error
from qga.context import Context
from qga.cstring import os_text
from qga.errors import QgaError
from qga.linux import fsfreeze as fs
from qga.linux.clock import boot_id, boottime
from qga.linux.helpers import HelperFailed, run_helper, unsafe_to_run
from qga.linux.mounts import Mount, exclusion, list_mounts
from qga.command import command, on_agent_start
from qga.state import FreezeStart
from qga.log import get_logger

log = get_logger(__name__)

#: How long the shutdown thaw waits for a freeze/thaw in progress.
SHUTDOWN_LOCK_WAIT = 30.0
#: Seconds between STATUS= updates of the time a freeze has left.
STATUS_INTERVAL = 10.0


class FreezeState:
    """Per-agent freeze bookkeeping (serialises worker, timer and shutdown)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.timer: Any = None
        #: CLOCK_BOOTTIME of the freeze start (None: unknown) and of the automatic thaw.
        self.since: Optional[float] = None
        self.deadline = 0.0
        #: Bumped on every freeze and thaw so a stale auto-thaw does nothing.
        self.generation = 0


def _state(ctx: Context) -> FreezeState:
    return ctx.subject(FreezeState)


def _mounts() -> List[Mount]:
    try:
        return list_mounts()
    except OSError:
        raise QgaError("failed to open mtab file: '/proc/self/mounts'") from None


def _run_hook(ctx: Context, arg: str) -> None:
    hook = ctx.config.fsfreeze_hook
    if not hook:
        return
    refusal = unsafe_to_run(hook)
    if refusal is not None:
        raise QgaError(f"refusing to run fsfreeze hook '{hook}': {refusal}")
    log.info("executing fsfreeze hook with arg '%s'", arg)
    # Unlike qemu-ga, a hook that hangs is killed (its whole session) after
    # fsfreeze-hook-timeout seconds, so a freeze cannot wedge the agent forever.
    try:
        run_helper([hook, arg], "execute fsfreeze hook", timeout=ctx.config.fsfreeze_hook_timeout or None)
    except HelperFailed as exc:
        raise helper_error(exc) from None


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


def _without_excluded(ctx: Context, mounts: List[Mount]) -> List[Mount]:
    """Freeze-all: drop the ``fsfreeze-exclude`` mounts, saying so (before logging is held)."""
    kept: List[Mount] = []
    excluded: List[str] = []
    for mount in mounts:
        pattern = exclusion(mount, ctx.config.fsfreeze_exclude)
        if pattern is None:
            kept.append(mount)
        else:
            excluded.append(mount.dirname)
            log.warning("guest-fsfreeze-freeze: not freezing %s (%s): fsfreeze-exclude entry '%s'",
                        mount.dirname, mount.devtype, pattern)
    if excluded:
        ctx.audit("guest-fsfreeze-freeze", excluded=excluded)
    return kept


def do_freeze(ctx: Context, mountpoints: Optional[List[str]]) -> int:
    """The body of guest-fsfreeze-freeze(-list); ``None`` freezes all but the excluded."""
    st = _state(ctx)
    with st.lock:
        _run_hook(ctx, "freeze")
        mounts = _mounts()
        if mountpoints is None:
            mounts = _without_excluded(ctx, mounts)
        ctx.set_frozen(True)  # marker first: a crash from here on restarts frozen
        since = boottime()
        ctx.state.record_freeze_start(FreezeStart(boot_id(), since))
        st.generation += 1
        try:
            count = _freeze_mounts(mounts, mountpoints)
        except QgaError:
            _thaw_quietly(ctx, "freeze failed part-way")
            raise
        if count == 0:
            ctx.set_frozen(False)  # nothing frozen; the thaw hook does not run
        else:
            _schedule_limit(ctx, st.generation, since)
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
def _schedule_limit(ctx: Context, generation: int, since: float) -> None:
    """Worker thread: arm the freeze time limit, counted from ``since`` (CLOCK_BOOTTIME)."""
    timeout = ctx.config.fsfreeze_timeout
    if timeout > 0:
        ctx.loop.call_soon_threadsafe(_arm_limit, ctx, generation, since, since + timeout)


def _arm_limit(ctx: Context, generation: int, since: Optional[float], deadline: float) -> None:
    """Loop thread: start ticking towards ``deadline`` (``since`` None: start unknown)."""
    st = _state(ctx)
    if st.generation != generation or not ctx.frozen:
        return
    if st.timer is not None:
        st.timer.cancel()
    st.since, st.deadline = since, deadline
    _tick(ctx, generation)


def _tick(ctx: Context, generation: int) -> None:
    """Loop thread: show the time left in STATUS=, thaw (in a helper thread) once it is up.

    The deadline is compared with CLOCK_BOOTTIME at every tick, so time the
    guest spent suspended counts (the loop's timers are monotonic).
    """
    st = _state(ctx)
    if st.generation != generation or not ctx.frozen:
        return
    left = st.deadline - boottime()
    if left <= 0:
        st.timer = None
        threading.Thread(target=_auto_thaw, args=(ctx, generation),
                         name="qga-auto-thaw", daemon=True).start()
        return
    sdnotify.status(f"filesystems frozen; automatic thaw in {left:.0f} s (fsfreeze-timeout)")
    st.timer = ctx.loop.call_later(min(STATUS_INTERVAL, left), _tick, ctx, generation)


def _auto_thaw(ctx: Context, generation: int) -> None:
    st = _state(ctx)
    timeout = ctx.config.fsfreeze_timeout
    with st.lock:
        if st.generation != generation or not ctx.frozen:
            return  # thawed (or re-frozen) meanwhile
        since, deadline = st.since, st.deadline
        count = _thaw_quietly(ctx, "fsfreeze-timeout")
        thawed_at = boottime()
    # Logging is suspended while frozen: these records come after the thaw.
    log.critical("filesystems were frozen for longer than fsfreeze-timeout (%g s): "
                 "the agent thawed %d filesystem(s) by itself", timeout, count)
    # Times are CLOCK_BOOTTIME seconds; frozen_since is None when the freeze
    # began under a previous instance that left no record of it.
    ctx.audit("fsfreeze auto-thaw", timeout=timeout, thawed=count, frozen_since=since,
              deadline=deadline, thawed_at=thawed_at)
    sdnotify.status(f"filesystems thawed automatically after fsfreeze-timeout ({timeout:g} s)")


@on_agent_start
def _on_new_context(ctx: Context) -> None:
    """Per-agent hooks: thaw on the way out; arm the limit if we start frozen."""
    ctx.on_shutdown(lambda: _shutdown_thaw(ctx))
    # Runs once the loop starts, after the agent has read the frozen marker.
    ctx.loop.call_soon_threadsafe(_start_frozen_limit, ctx)


def _start_frozen_limit(ctx: Context) -> None:
    """Loop thread: a previous instance left us frozen; its deadline still holds."""
    timeout = ctx.config.fsfreeze_timeout
    if not ctx.frozen or timeout <= 0:
        return
    start = ctx.state.freeze_start()
    now = boottime()
    if start is None:
        log.warning("when the previous instance's freeze began is not recorded: "
                    "fsfreeze-timeout counts from now")
        _arm_limit(ctx, _state(ctx).generation, None, now + timeout)
    elif start.boot_id != boot_id():
        # CLOCK_BOOTTIME restarted at boot: the recorded value means nothing,
        # and the reboot has ended that freeze anyway.
        log.warning("the frozen marker is from an earlier boot: thawing now")
        _arm_limit(ctx, _state(ctx).generation, None, now)
    else:
        _arm_limit(ctx, _state(ctx).generation, start.boottime, start.boottime + timeout)


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



# -- commands -------------------------------------------------------------------
@command("guest-fsfreeze-status", order=14, frozen_safe=True, group="fsfreeze", inline=True)
def fsfreeze_status(ctx: Context) -> str:
    """The agent's own view ("frozen"/"thawed"), not a kernel query."""
    return "frozen" if ctx.frozen else "thawed"


@command("guest-fsfreeze-freeze", order=15, group="fsfreeze", deadline=None, audit=True)
def fsfreeze_freeze(ctx: Context) -> int:
    """Freeze every freezable mount but the ``fsfreeze-exclude`` ones; returns how many were frozen."""
    log.info("guest-fsfreeze called")
    ctx.audit("guest-fsfreeze-freeze")
    return do_freeze(ctx, None)


@command("guest-fsfreeze-freeze-list", order=16, group="fsfreeze", deadline=None, audit=("mountpoints",),
         args={"*mountpoints": ["str"]})
def fsfreeze_freeze_list(ctx: Context, mountpoints: Optional[List[str]] = None) -> int:
    """Freeze the listed mount points (exact string match; unknown ones ignored)."""
    log.info("guest-fsfreeze called")
    ctx.audit("guest-fsfreeze-freeze-list", mountpoints=mountpoints)
    wanted = None if mountpoints is None else [os_text(m) for m in mountpoints]
    return do_freeze(ctx, wanted)


@command("guest-fsfreeze-thaw", order=17, frozen_safe=True, group="fsfreeze", deadline=None, audit=True)
def fsfreeze_thaw(ctx: Context) -> int:
    """Thaw every mount (FITHAW until it fails); returns how many were thawed."""
    try:
        count = do_thaw(ctx)
    except QgaError as err:
        ctx.audit("guest-fsfreeze-thaw", error=err.desc)
        raise
    ctx.audit("guest-fsfreeze-thaw", thawed=count)
    return count


@command("guest-fstrim", order=18, group="fsfreeze", deadline=None, audit=("minimum",),
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
