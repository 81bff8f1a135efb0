"""NVMe SMART / health log (log page 02h) through the admin passthrough ioctl.

The ioctl takes ``struct nvme_admin_cmd`` (72 bytes) holding the address of a
512-byte buffer the controller fills.  The buffer is an ``array`` so its
address is known without ctypes.  Needs CAP_SYS_ADMIN and a kernel NVMe
device; any failure just means "no smart member" (qemu-ga logs at debug).
"""
from __future__ import annotations

import array
import fcntl
import os
import struct
from typing import Any, Dict, Optional
from qga.log import get_logger

log = get_logger(__name__)

#: _IOWR('N', 0x41, struct nvme_admin_cmd)
NVME_IOCTL_ADMIN_CMD = (3 << 30) | (72 << 16) | (ord("N") << 8) | 0x41
_ADMIN_GET_LOG_PAGE = 0x02
_LOG_SMART = 0x02
_NSID_BROADCAST = 0xFFFFFFFF
_LOG_SIZE = 512
# opcode flags rsvd1 nsid cdw2 cdw3 metadata addr metadata_len data_len cdw10..15 timeout_ms result
_ADMIN_CMD = struct.Struct("=BBHIIIQQII6III")

_U64_FIELDS = ("data-units-read", "data-units-written", "host-read-commands", "host-write-commands",
               "controller-busy-time", "power-cycles", "power-on-hours", "unsafe-shutdowns",
               "media-errors", "number-of-error-log-entries")


def build_get_log_page(buf_addr: int) -> bytearray:
    """The admin command: Get Log Page, SMART, all namespaces, retain async event."""
    numd = _LOG_SIZE // 4 - 1
    cdw10 = _LOG_SMART | (1 << 15) | (numd << 16)
    return bytearray(_ADMIN_CMD.pack(_ADMIN_GET_LOG_PAGE, 0, 0, _NSID_BROADCAST, 0, 0, 0,
                                     buf_addr, 0, _LOG_SIZE, cdw10, 0, 0, 0, 0, 0, 0, 0))


def parse_smart_log(log_page: bytes) -> Dict[str, Any]:
    """GuestDiskSmart (``type: nvme``) from the 512-byte log, schema member order."""
    critical, temperature, spare, spare_threshold, used = struct.unpack_from("<BHBBB", log_page, 0)
    out: Dict[str, Any] = {
        "type": "nvme", "critical-warning": critical, "temperature": temperature,
        "available-spare": spare, "available-spare-threshold": spare_threshold,
        "percentage-used": used,
    }
    for i, name in enumerate(_U64_FIELDS):
        lo, hi = struct.unpack_from("<QQ", log_page, 32 + 16 * i)
        out[name + "-lo"] = lo
        out[name + "-hi"] = hi
    return out


def read_smart(devnode: str) -> Optional[Dict[str, Any]]:
    """The SMART member for an NVMe namespace device node, or None."""
    try:
        fd = os.open(devnode, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.debug("Failed to open device: %s: %s", devnode, exc.strerror)
        return None
    try:
        buf = array.array("B", bytes(_LOG_SIZE))
        cmd = build_get_log_page(buf.buffer_info()[0])
        fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd, True)
        return parse_smart_log(buf.tobytes())
    except OSError as exc:
        log.debug("Failed to get smart: %s: %s", devnode, exc.strerror)
        return None
    finally:
        os.close(fd)
