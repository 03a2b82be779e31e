"""Garbage-collection accounting inside the benchmark's proxies (`bench_proxy.py --gc-stats`).

Loaded at a proxy's start-up by `bench/proxy_site/sitecustomize.py` when BENCH_GC_DIR is set. It
times every collection (CPU, by generation) and, on SIGUSR2, writes the totals to
`$BENCH_GC_DIR/gc-<pid>.json`, so the benchmark can read them before and after a window. With
BENCH_GC_DISABLE=1 the collector is off for the whole process (`--no-gc`: takes garbage collection
out of the comparison, memory grows).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

_totals: dict[str, list[float]] = {"collections": [0, 0, 0], "cpu_seconds": [0.0, 0.0, 0.0]}
_started = [0.0]


def _account(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.process_time()
        return
    generation = info["generation"]
    _totals["collections"][generation] += 1
    _totals["cpu_seconds"][generation] += time.process_time() - _started[0]


def _write(*_: object) -> None:
    path = Path(os.environ.get("BENCH_GC_DIR", ".")) / f"gc-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**_totals, "objects": len(gc.get_objects())}))
    tmp.replace(path)


gc.callbacks.append(_account)
signal.signal(signal.SIGUSR2, _write)
if os.environ.get("BENCH_GC_DISABLE") == "1":
    gc.disable()
