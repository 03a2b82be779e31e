"""Names the benchmark's variant proxies share with `bench_proxy.py`, which must not load LiteLLM.

Only the standard library here: `bench/proxy_site/sitecustomize.py` uses it before anything else
is loaded.
"""

import importlib

# bench/variant_callbacks.py: what each variant runs is described there.
VARIANTS = ("imported", "preloaded", "started", "ping", "ping-nowait", "admit", "admit-ping", "full", "toggled")

# The plugin's modules as `imported` and `preloaded` load them: all but `solaris_tokens.proxy`,
# whose handler instance would start the service.
PLUGIN_MODULES = (
    "solaris_tokens.estimate",
    "solaris_tokens.identity",
    "solaris_tokens.notify.delivery",
    "solaris_tokens.runtime",
)


def import_plugin_modules() -> None:
    """Load the plugin's modules without starting its service (`imported`, `preloaded`)."""
    for name in PLUGIN_MODULES:
        importlib.import_module(name)


# A request carrying this header runs through `toggled` with the plugin's hooks idle.
IDLE_HEADER = "x-bench-idle"
