"""One memory scenario in a fresh interpreter (so earlier scenarios' allocations don't count).

    python bench/_memory.py ADDRESS WARMUP CALLS KEYS

Makes WARMUP calls through one compiled ``KitexOutputBinding``, reads VmRSS, makes CALLS more
(checkpoints every quarter), reads it again, prints one JSON line. The ``version`` metadata cycles
through KEYS distinct values: each is its own entry in the binding's metadata cache (the raw
metadata is the cache key) while all share one client, so a leak per distinct key or per call
shows up without the connection churn that distinct destinations would add.
"""

from __future__ import annotations

import gc
import json
import sys

from kitex_fast import InvokeRequest, KitexOutputBinding
from kitex_fast.testing import echo_request


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_after_gc() -> int:
    # Garbage the collector would free is not growth; a leak survives this.
    gc.collect()
    return vm_rss_kib()


def main() -> None:
    address, warmup, calls, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = echo_request("x" * 1024)
    requests = [
        InvokeRequest("get", data, {"hostPorts": address, "destService": "echo", "methodName": "echo",
                                    "version": "v%d" % i})
        for i in range(keys)
    ]
    checkpoints = []
    with KitexOutputBinding(implementation="c") as binding:
        invoke = binding.invoke
        for i in range(warmup):
            invoke(requests[i % keys])
        rss_warm = rss_after_gc()
        quarter = max(calls // 4, 1)
        done = 0
        while done < calls:
            step = min(quarter, calls - done)
            for i in range(done, done + step):
                invoke(requests[i % keys])
            done += step
            checkpoints.append((done, rss_after_gc()))
        clients = binding.client_count
    print(json.dumps({"keys": keys, "warmup": warmup, "calls": calls, "rss_warm_kib": rss_warm,
                      "rss_end_kib": checkpoints[-1][1], "checkpoints": checkpoints,
                      "clients": clients}))


if __name__ == "__main__":
    main()
