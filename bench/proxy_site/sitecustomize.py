"""What the benchmark loads into its proxies at interpreter start, before LiteLLM's own start-up.

Put first on a proxy's PYTHONPATH by `bench_proxy.py` (Python imports `sitecustomize` at start-up):
- BENCH_GC_DIR set (`--gc-stats`, `--no-gc`): the garbage-collection probe, `bench/gc_probe.py`;
- BENCH_PRELOAD=1 (`--variant preloaded`): the plugin's modules (`bench/variant_spec.py`). The
  `imported` variant imports the same modules from its callback, after LiteLLM has started: the
  pair tells whether what the plugin imports costs the proxy per request, or when it is imported.
"""

from __future__ import annotations

import importlib
import os

if os.environ.get("BENCH_GC_DIR"):
    importlib.import_module("bench.gc_probe")

if os.environ.get("BENCH_PRELOAD") == "1":
    from bench.variant_spec import import_plugin_modules

    import_plugin_modules()
