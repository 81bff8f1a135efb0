"""vCPUs, memory blocks and CPU statistics (Linux sysfs / procfs)."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from qga.context import Context
from qga.linux import on_linux, procstat, sysfs_cpu, sysfs_memory
from qga.command import command
from qga.schema import Struct

#: Overridable by tests (copied sysfs trees).
SYSFS_CPU = sysfs_cpu.DEFAULT_DIR
SYSFS_MEMORY = sysfs_memory.DEFAULT_DIR
PROC_STAT = procstat.DEFAULT_PATH

GuestLogicalProcessor = Struct("GuestLogicalProcessor", {
    "logical-id": "int", "online": "bool", "*can-offline": "bool"})
GuestMemoryBlock = Struct("GuestMemoryBlock", {
    "phys-index": "uint64", "online": "bool", "*can-offline": "bool"})


@command("guest-get-vcpus", order=23, group="info", inline=True, available=on_linux)
def get_vcpus(ctx: Context) -> List[Dict[str, Any]]:
    """Every ``cpuN`` of sysfs, in directory order."""
    return sysfs_cpu.read_vcpus(SYSFS_CPU)


@command("guest-set-vcpus", order=24, group="system-control", args={"vcpus": [GuestLogicalProcessor]},
         audit=("vcpus",), available=on_linux)
def set_vcpus(ctx: Context, vcpus: Sequence[Dict[str, Any]]) -> int:
    """Online/offline vCPUs; the number of entries processed (partial counts)."""
    ctx.audit("guest-set-vcpus called",
              vcpus=",".join(f"{v['logical-id']}:{int(v['online'])}" for v in vcpus))
    return sysfs_cpu.set_vcpus(vcpus, SYSFS_CPU)


@command("guest-get-memory-blocks", order=28, group="info", inline=True, available=on_linux)
def get_memory_blocks(ctx: Context) -> List[Dict[str, Any]]:
    """Every ``memoryN`` block; ``[]`` without memory hotplug support."""
    return sysfs_memory.read_memory_blocks(SYSFS_MEMORY)


@command("guest-set-memory-blocks", order=29, group="system-control", args={"mem-blks": [GuestMemoryBlock]},
         audit=("mem-blks",), available=on_linux)
def set_memory_blocks(ctx: Context, mem_blks: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Online/offline memory blocks; a per-block response, never a global error."""
    ctx.audit("guest-set-memory-blocks called",
              blocks=",".join(f"{b['phys-index']}:{int(b['online'])}" for b in mem_blks))
    return sysfs_memory.set_memory_blocks(mem_blks, SYSFS_MEMORY)


@command("guest-get-memory-block-info", order=30, group="info", inline=True, available=on_linux)
def get_memory_block_info(ctx: Context) -> Dict[str, int]:
    """The memory block size in bytes."""
    return sysfs_memory.read_block_info(SYSFS_MEMORY)


@command("guest-get-cpustats", order=42, group="info", inline=True, available=on_linux)
def get_cpustats(ctx: Context) -> List[Dict[str, Any]]:
    """Per-CPU times in milliseconds from /proc/stat."""
    return procstat.read_cpustats(PROC_STAT)
