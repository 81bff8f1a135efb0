"""Protocol commands: guest-sync, guest-sync-delimited, guest-ping, guest-info."""
from __future__ import annotations

from typing import Any, Dict

from qga import QEMU_VERSION
from qga.context import Context
from qga.command import command


@command("guest-sync-delimited", order=1, frozen_safe=True, group="protocol", args={"id": "int"}, inline=True,
         reply_prefix=b"\xff")
def sync_delimited(ctx: Context, id: int) -> int:  # noqa: A002  (the wire name)
    """Echo ``id``; the reply is preceded by a raw 0xFF so the host can resynchronise."""
    return id


@command("guest-sync", order=2, frozen_safe=True, group="protocol", args={"id": "int"}, inline=True)
def sync(ctx: Context, id: int) -> int:  # noqa: A002
    """Echo ``id`` (libvirt's handshake, sent with a millisecond timestamp)."""
    return id


@command("guest-ping", order=3, frozen_safe=True, group="protocol", inline=True)
def ping(ctx: Context) -> None:
    """Answer ``{}``: the agent is alive."""
    return None


@command("guest-info", order=6, frozen_safe=True, group="protocol", inline=True)
def info(ctx: Context) -> Dict[str, Any]:
    """Version and every registered command, enabled or not, newest first."""
    return {"version": QEMU_VERSION, "supported_commands": ctx.registry.info()}
