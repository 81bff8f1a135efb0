"""vCPUs, memory blocks and CPU statistics (Linux sysfs / procfs)."""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

from qga.codec import JsonText, object_template

from qga.commands.failures import could_not_open
from qga.context import Context
from qga.errors import QgaError, os_error, strerror
from qga.linux import on_linux, procstat, sysfs_cpu, sysfs_memory
from qga.linux.sysfs import StepError
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


VcpuFailure = Union[StepError, sysfs_cpu.CannotOffline]
MemoryFailure = Union[StepError, sysfs_memory.NoMemoryBlocks]


def vcpu_error(exc: VcpuFailure) -> QgaError:
    """qemu-ga's text for a :mod:`qga.linux.sysfs_cpu` failure."""
    if isinstance(exc, sysfs_cpu.CannotOffline):
        return QgaError(f"logical processor #{exc.logical_id} can't be offlined")
    call = f'{exc.step}("{exc.path}/{exc.name}")'
    if exc.cause is None:
        return QgaError(f"{call}: unexpected EOF")
    if exc.step == "opendir":
        return could_not_open(exc.path, exc.cause)
    if exc.step == "listdir":
        return os_error(f"failed to list entries: {exc.path}", exc.cause, exc.path)
    if exc.step == "open":
        return os_error(f"could not open {exc.path}/{exc.name}", exc.cause, exc.path)
    return os_error(call, exc.cause)


def memory_error(exc: MemoryFailure) -> QgaError:
    """qemu-ga's text for a :mod:`qga.linux.sysfs_memory` failure."""
    if isinstance(exc, sysfs_memory.NoMemoryBlocks):
        return QgaError("guest reported zero memory blocks!")
    if exc.cause is None:
        return QgaError(f'{exc.step} sysfs file "{exc.name}": unexpected EOF')
    if exc.step == "opendir":
        return could_not_open(exc.path, exc.cause)
    if exc.step == "scandir":
        return os_error(f'Can\'t open directory"{exc.path}"', exc.cause, exc.path)
    return QgaError(f'{exc.step} sysfs file "{exc.name}": {strerror(exc.errno)}')


#: A GuestLogicalProcessor as read (every member set): its template, and the
#: getter of its values from (logical-id, online, can-offline).
_VCPU_TEMPLATE, _VCPU_POSITIONS = object_template(("logical-id", "online", "can-offline"))
_vcpu_values = operator.itemgetter(*_VCPU_POSITIONS)
_BOOL = {True: "true", False: "false"}


@command("guest-get-vcpus", order=23, group="info", inline=True, available=on_linux)
def get_vcpus(ctx: Context) -> JsonText:
    """Every ``cpuN`` of sysfs, in directory order."""
    try:
        vcpus = sysfs_cpu.read_vcpus(SYSFS_CPU)
    except (StepError, sysfs_cpu.CannotOffline) as exc:
        raise vcpu_error(exc) from None
    return JsonText.array([_VCPU_TEMPLATE % _vcpu_values((v["logical-id"], _BOOL[v["online"]], _BOOL[v["can-offline"]]))
                           for v in vcpus])


@command("guest-set-vcpus", order=24, group="system-control", args={"vcpus": [GuestLogicalProcessor]},
         audit=("vcpus",), available=on_linux)
def set_vcpus(ctx: Context, vcpus: Sequence[Dict[str, Any]]) -> int:
    """Online/offline vCPUs; the number of entries processed (partial counts)."""
    ctx.audit("guest-set-vcpus called",
              vcpus=",".join(f"{v['logical-id']}:{int(v['online'])}" for v in vcpus))
    try:
        return sysfs_cpu.set_vcpus(vcpus, SYSFS_CPU)
    except (StepError, sysfs_cpu.CannotOffline) as exc:
        raise vcpu_error(exc) from None


@command("guest-get-memory-blocks", order=28, group="info", inline=True, available=on_linux)
def get_memory_blocks(ctx: Context) -> List[Dict[str, Any]]:
    """Every ``memoryN`` block; ``[]`` without memory hotplug support."""
    try:
        return sysfs_memory.read_memory_blocks(SYSFS_MEMORY)
    except (StepError, sysfs_memory.NoMemoryBlocks) as exc:
        raise memory_error(exc) from None


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
    try:
        return sysfs_memory.read_block_info(SYSFS_MEMORY)
    except StepError as exc:
        raise memory_error(exc) from None


@functools.lru_cache(maxsize=None)
def _cpustats_format(columns: int) -> Tuple[str, Callable[[Sequence[Any]], Tuple[Any, ...]]]:
    """The template of a GuestCpuStats with ``columns`` values after ``type``, and
    the getter of its values from ``[type's JSON text, *row]``."""
    template, positions = object_template(procstat.MEMBERS[:columns + 1])
    return template, operator.itemgetter(*positions)


@command("guest-get-cpustats", order=42, group="info", inline=True, available=on_linux)
def get_cpustats(ctx: Context) -> JsonText:
    """Per-CPU times in milliseconds from /proc/stat."""
    try:
        rows = procstat.read_cpustats(PROC_STAT)
    except OSError as exc:
        raise could_not_open(PROC_STAT, exc) from None
    objects = []
    for row in rows:
        template, values = _cpustats_format(len(row))
        objects.append(template % values(['"linux"', *row]))
    return JsonText.array(objects)
