"""Memory of the local limiter per tracked client, and proof that it stays bounded."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

from gateway.limits import Bucket, MemoryStorage
from gateway.policy import LimitKey, RateLimit

LIMIT = RateLimit(LimitKey.CLIENT_IP, 100, 3600.0, "client_ip_100_per_1h")


def _ips(n: int) -> Iterator[str]:
    return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n))


def measure_limiter_memory(
    clients: int = 1_000_000, bounded_max: int = 100_000
) -> dict[str, float]:
    gc.collect()
    storage = MemoryStorage(max_keys=clients * 2)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # The key strings are counted too: the limiter is what keeps them alive.
    for ip in _ips(clients):
        storage.acquire_now([Bucket("site", LIMIT, ip)])
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_client = (after - before) / clients
    del storage
    gc.collect()
    bounded = MemoryStorage(max_keys=bounded_max)
    for ip in _ips(clients):
        bounded.acquire_now([Bucket("site", LIMIT, ip)])
    return {
        "clients": float(clients),
        "bytes_per_client": per_client,
        "bounded_max": float(bounded_max),
        "bounded_clients": float(clients),
        "bounded_tracked": float(bounded.tracked_keys()),
    }


if __name__ == "__main__":
    print(measure_limiter_memory())
