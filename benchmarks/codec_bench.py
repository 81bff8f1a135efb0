"""Codec throughput: python3 benchmarks/codec_bench.py [MiB]

Prints MB/s for parsing a guest-file-write request carrying a base64 string
(fed in 1 MiB chunks, and in one piece), MB/s for serialising a
guest-file-read reply of the same size, and requests/s for small pings.
"""
from __future__ import annotations

import base64
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from qga.codec import JsonStreamParser
from qga.codec import dumps


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    b64 = base64.b64encode(os.urandom((mib << 20) * 3 // 4 - 64)).decode("ascii")
    request = ('{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"' + b64 + '"}}\n').encode("ascii")
    chunk = 1 << 20
    pieces = [request[i:i + chunk] for i in range(0, len(request), chunk)]

    def parse_chunks() -> None:
        p = JsonStreamParser()
        items = [x for piece in pieces for x in p.feed(piece)]
        assert len(items) == 1 and items[0]["arguments"]["buf-b64"] == b64

    def parse_whole() -> None:
        items = JsonStreamParser().feed(request)
        assert len(items) == 1

    reply = {"return": {"count": len(b64) * 3 // 4, "buf-b64": b64, "eof": False}}

    def write() -> None:
        dumps(reply)

    mb = len(request) / 1e6
    print(f"parse {mib} MiB file-write request, 1 MiB chunks: {mb / _best(parse_chunks):8.0f} MB/s")
    print(f"parse {mib} MiB file-write request, one feed:     {mb / _best(parse_whole):8.0f} MB/s")
    print(f"serialise {mib} MiB file-read reply:              {mb / _best(write):8.0f} MB/s")

    n = 100000
    pings = b'{"execute":"guest-ping"}\n' * (n // 2) + b'{"execute":"guest-ping","id":12345}\n' * (n // 2)

    def parse_pings() -> None:
        assert len(JsonStreamParser().feed(pings)) == n

    def parse_pings_4k() -> None:
        p = JsonStreamParser()
        got = 0
        for i in range(0, len(pings), 4096):
            got += len(p.feed(pings[i:i + 4096]))
        assert got == n

    replies = [{"return": {}, "id": 12345}] * n

    def write_replies() -> None:
        for r in replies:
            dumps(r)

    print(f"parse pings, one feed:      {n / _best(parse_pings):10.0f} requests/s")
    print(f"parse pings, 4 KiB feeds:   {n / _best(parse_pings_4k):10.0f} requests/s")
    print(f"serialise ping replies:     {n / _best(write_replies):10.0f} replies/s")


if __name__ == "__main__":
    main()
