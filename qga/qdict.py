"""QEMU's QDict member order, for byte-exact replies and QEMU-identical checks.

QEMU keeps JSON objects in a 512-bucket hash table and walks it bucket by
bucket, the most recently inserted key first within a bucket.  Both the reply
writer and the request checks (which member is reported first) follow it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, List, Tuple

_BUCKETS = 512


def qdict_key_hash(key: str) -> int:
    """QEMU's string hash for QDict keys (over the UTF-8 bytes)."""
    data = key.encode("utf-8", "surrogatepass")
    h = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, c in enumerate(data):
        h = (h + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * h + 12345) & 0xFFFFFFFF


@lru_cache(maxsize=4096)
def _order(keys: Tuple[str, ...]) -> Tuple[str, ...]:
    buckets: dict = {}
    for k in keys:
        buckets.setdefault(qdict_key_hash(k) % _BUCKETS, []).insert(0, k)
    return tuple(k for b in sorted(buckets) for k in buckets[b])


def member_order(keys: Iterable[str]) -> List[str]:
    """``keys`` (in insertion order) in the order QEMU iterates them."""
    return list(_order(tuple(keys)))
