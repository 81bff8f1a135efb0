"""QEMU's QDict member order, for byte-exact replies and QEMU-identical checks.

QEMU keeps JSON objects in a 512-bucket hash table and walks it bucket by
bucket, the most recently inserted key first within a bucket.  Both the reply
writer and the request checks (which member is reported first) follow it.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

_BUCKETS = 512
_CACHE_MAX = 4096  # replies and requests use a small, fixed set of shapes
#: Only shapes this small are cached: keys come from the host too (request
#: members, object ids echoed back), and a cache full of megabyte keys would
#: hold on to them for ever.
_CACHE_KEY_CHARS = 256
_order_cache: Dict[Tuple[str, ...], Tuple[str, ...]] = {}


def qdict_key_hash(key: str) -> int:
    """QEMU's tdb_hash() of a QDict key (on its UTF-8 bytes, up to a NUL)."""
    data = key.encode("utf-8", "surrogateescape").split(b"\0", 1)[0]
    h = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, c in enumerate(data):
        h = (h + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * h + 12345) & 0xFFFFFFFF


def member_order(keys: Iterable[str]) -> Tuple[str, ...]:
    """Iteration order of a QDict whose keys were inserted in ``keys`` order."""
    keys = tuple(keys)
    order = _order_cache.get(keys)
    if order is None:
        buckets: Dict[int, List[str]] = {}
        for k in keys:
            buckets.setdefault(qdict_key_hash(k) % _BUCKETS, []).insert(0, k)
        order = tuple(k for b in sorted(buckets) for k in buckets[b])
        if len(_order_cache) < _CACHE_MAX and sum(map(len, keys)) <= _CACHE_KEY_CHARS:
            _order_cache[keys] = order
    return order
