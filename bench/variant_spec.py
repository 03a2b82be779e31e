"""Names the benchmark's variant proxies share with `bench_proxy.py`, which must not load LiteLLM.

No imports here: `bench/proxy_site/sitecustomize.py` reads PLUGIN_MODULES before anything else is
loaded.
"""

# bench/variant_callbacks.py: what each variant runs is described there.
VARIANTS = ("imported", "preloaded", "started", "ping", "admit", "admit-ping", "full", "toggled")

# The plugin's modules as `imported` and `preloaded` load them: all but `solaris_tokens.proxy`,
# whose handler instance would start the service.
PLUGIN_MODULES = (
    "solaris_tokens.estimate",
    "solaris_tokens.identity",
    "solaris_tokens.notify.delivery",
    "solaris_tokens.runtime",
)

# A request carrying this header runs through `toggled` with the plugin's hooks idle.
IDLE_HEADER = "x-bench-idle"
