"""Effective configuration: defaults < config file < command line.

The file is qemu-ga's: ``/etc/qemu/qemu-ga.conf`` (or ``$QGA_CONF``, or
``-c``), group ``[general]``, the same keys, lists separated by ``,`` that
accumulate with the command line.  Our extensions are extra keys in the same
group (qemu-ga ignores keys it does not know, so one file serves both).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Set

from qga.errors import InternalError
from qga import keyfile
from qga.command import GROUPS

DEFAULT_CONFIG_PATH = "/etc/qemu/qemu-ga.conf"
DEFAULT_FSFREEZE_HOOK = "/etc/qemu/fsfreeze-hook"
DEFAULT_PATHS = {
    "virtio-serial": "/dev/virtio-ports/org.qemu.guest_agent.0",
    "isa-serial": "/dev/ttyS0",
}
METHODS = ("virtio-serial", "isa-serial", "unix-listen", "vsock-listen")


class ConfigError(InternalError):
    """Invalid configuration; the message is printed and the agent exits 1."""


class Config:
    """Every setting, qemu-ga's first, then qemu-ga-py's extensions.

    ``Config(name=value, ...)`` overrides defaults; instances compare by their
    settings.  A plain class, not a dataclass: the ``dataclasses`` module (with
    inspect, ast, dis and tokenize) cost the agent's start-up about 5 ms.
    """

    daemon: bool = False
    method: str = "virtio-serial"
    path: Optional[str] = None
    logfile: Optional[str] = None
    pidfile: str = "/var/run/qemu-ga.pid"
    fsfreeze_hook: Optional[str] = None
    statedir: str = "/var/run"
    verbose: bool = False
    retry_path: bool = False
    block_rpcs: List[str]
    allow_rpcs: Optional[List[str]] = None
    # --- extensions ---------------------------------------------------------
    #: Command groups disabled as a whole (see qga.command.GROUPS).
    block_groups: List[str]
    #: Seconds after which the agent undoes a freeze (counted from the freeze, across restarts); 0 = never.
    fsfreeze_timeout: float = 600.0
    #: Seconds the fsfreeze hook may run before it is killed; 0 = wait forever (qemu-ga).
    fsfreeze_hook_timeout: float = 300.0
    #: Seconds guest-get-fsinfo waits for one statvfs (a hung network filesystem).
    statvfs_timeout: float = 2.0
    #: What SIGTERM does while frozen: "thaw" (then exit) or "ignore" (qemu-ga).
    frozen_sigterm: str = "thaw"
    #: Default per-command deadline in seconds (freeze/thaw have none).
    command_timeout: float = 60.0
    #: Mount-point globs (``/...``) and filesystem types guest-fsfreeze-freeze leaves alone.
    fsfreeze_exclude: List[str]
    #: Interface name globs hidden from guest-network-get-interfaces.
    interface_exclude: List[str]
    #: guest-file-open refuses to follow a final symlink.
    file_nofollow: bool = False
    #: Caps that turn resource exhaustion into clear errors.
    max_file_handles: int = 1024
    max_exec_records: int = 1024
    max_concurrent_execs: int = 128
    #: Register qemu-ga-py's ``x-`` commands (x-guest-exec-kill).
    extension_commands: bool = False
    pidfile_given: bool = False
    #: Config-file keys set by the file or the command line (``-D`` prints an
    #: extension key only when it was set).
    keys_set: Set[str]

    def __init__(self, **settings: Any) -> None:
        # The mutable defaults, fresh for each instance; the others are class attributes.
        self.block_rpcs = []
        self.block_groups = []
        self.fsfreeze_exclude = []
        self.interface_exclude = []
        self.keys_set = set()
        for name, value in settings.items():
            if name not in _FIELDS:
                raise TypeError(f"Config() got an unexpected keyword argument {name!r}")
            setattr(self, name, value)

    def _values(self) -> "tuple[Any, ...]":
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS) + ")"

    def effective_path(self) -> Optional[str]:
        """``path`` or the method's default (unix/vsock have none)."""
        return self.path or DEFAULT_PATHS.get(self.method)


#: The settings' names, in declaration order (the annotated class attributes).
_FIELDS = tuple(Config.__annotations__)


def _as_list(value: str) -> List[str]:
    return [item for item in value.split(",") if item]


def _number(kind: Callable[[str], Any]) -> Callable[[str, str], Any]:
    """A converter for numeric keys, failing with GLib's wording."""
    def convert(key: str, value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise keyfile.KeyFileError(
                f"Key file contains key “{key}” which has a value that cannot be interpreted.") from None
    return convert


_as_float = _number(float)
_as_int = _number(int)


def _STR(_key: str, value: str) -> Any:
    return value


_BOOL = keyfile.parse_bool


def _LIST(_key: str, value: str) -> Any:
    return _as_list(value)

#: Config-file keys: converter, and whether the value accumulates (lists).
KEYS: Dict[str, Callable[[str, str], Any]] = {
    "daemon": _BOOL, "method": _STR, "path": _STR, "logfile": _STR, "pidfile": _STR,
    "fsfreeze-hook": _STR, "statedir": _STR, "verbose": _BOOL, "retry-path": _BOOL,
    "block-rpcs": _LIST, "allow-rpcs": _LIST,
    "block-groups": _LIST, "fsfreeze-timeout": _as_float, "frozen-sigterm": _STR,
    "fsfreeze-hook-timeout": _as_float, "fsfreeze-exclude": _LIST, "statvfs-timeout": _as_float,
    "command-timeout": _as_float, "interface-exclude": _LIST, "file-nofollow": _BOOL,
    "max-file-handles": _as_int, "max-exec-records": _as_int, "max-concurrent-execs": _as_int,
    "extension-commands": _BOOL,
}
#: The keys qemu-ga 10.2 knows, in the order its ``-D`` prints them.
QEMU_KEYS = ("daemon", "method", "path", "logfile", "pidfile", "fsfreeze-hook", "statedir",
             "verbose", "retry-path", "block-rpcs", "allow-rpcs")
LIST_KEYS = frozenset({"block-rpcs", "allow-rpcs", "block-groups", "fsfreeze-exclude", "interface-exclude"})


def config_path(cli_path: Optional[str]) -> "tuple[str, bool]":
    """The file to read and whether it was named explicitly (missing is then fatal)."""
    if cli_path:
        return cli_path, True
    env = os.environ.get("QGA_CONF")
    return (env, False) if env else (DEFAULT_CONFIG_PATH, False)


def apply(config: Config, key: str, value: Any) -> None:
    """Set one setting by its config-file key; lists accumulate.

    qemu-ga prepends the items of each list as it splits it, then appends that
    to what earlier options gave, so ``-b a,b -b c`` is kept (and dumped) as
    ``b,a,c``; the effective set is the same either way.
    """
    attr = key.replace("-", "_")
    if key in LIST_KEYS:
        current = getattr(config, attr)
        setattr(config, attr, (current or []) + list(reversed(list(value))))
    else:
        setattr(config, attr, value)
    config.keys_set.add(key)
    if key == "pidfile":
        config.pidfile_given = True


def load_file(config: Config, path: str, explicit: bool) -> None:
    """Apply the ``[general]`` group of the key file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"error loading configuration from path: {path}, "
                              f"No such file or directory") from None
        return
    except OSError as exc:
        raise ConfigError(f"error loading configuration from path: {path}, {exc.strerror}") from None
    try:
        general = keyfile.parse(raw.decode("utf-8")).get("general", {})
        for key, value in general.items():
            if key in KEYS:
                apply(config, key, KEYS[key](key, value))
    except (keyfile.KeyFileError, UnicodeDecodeError) as exc:
        raise ConfigError(f"error loading configuration from path: {path}, {exc}") from None


def validate(config: Config) -> None:
    """Checks qemu-ga makes before opening the channel, and our own."""
    if config.method not in METHODS:
        raise ConfigError(f"unsupported channel method/type: {config.method}")
    if not config.effective_path():
        raise ConfigError("must specify a path for this channel")
    unknown = [g for g in config.block_groups if g not in GROUPS]
    if unknown:
        raise ConfigError(f"unknown command group '{unknown[0]}' in block-groups "
                          f"(groups: {', '.join(g for g in GROUPS if g != 'protocol')})")
    if config.frozen_sigterm not in ("thaw", "ignore"):
        raise ConfigError(f"invalid frozen-sigterm value '{config.frozen_sigterm}' (thaw|ignore)")
    if min(config.fsfreeze_timeout, config.fsfreeze_hook_timeout) < 0 or \
            config.command_timeout <= 0 or config.statvfs_timeout <= 0:
        raise ConfigError("timeouts must be positive")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def dump(config: Config) -> str:
    """``-D``: the effective configuration as a key file.

    qemu-ga 10.2's keys come first, exactly as it prints them; an extension
    key follows only when the file or the command line set it, so a stock
    start prints what qemu-ga prints and the output still reads back as a
    config file.
    """
    general: Dict[str, str] = {
        "daemon": _fmt(config.daemon), "method": config.method,
        "path": config.effective_path() or "",
    }
    if config.logfile:
        general["logfile"] = config.logfile
    general["pidfile"] = config.pidfile
    if config.fsfreeze_hook:
        general["fsfreeze-hook"] = config.fsfreeze_hook
    general.update({
        "statedir": config.statedir, "verbose": _fmt(config.verbose),
        "retry-path": _fmt(config.retry_path), "block-rpcs": _fmt(config.block_rpcs),
        "allow-rpcs": _fmt(config.allow_rpcs or []),
    })
    for key in KEYS:
        if key not in QEMU_KEYS and key in config.keys_set:
            general[key] = _fmt(getattr(config, key.replace("-", "_")))
    return keyfile.dump({"general": general})
