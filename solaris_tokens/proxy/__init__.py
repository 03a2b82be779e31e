"""The LiteLLM side of solaris-tokens.

`litellm_settings: callbacks: ["solaris_tokens.proxy.handler"]` (this re-export) and
`["solaris_tokens.proxy.handler.handler"]` (the module attribute) both name the same instance.
"""

from solaris_tokens.proxy.handler import SolarisHandler, handler

__all__ = ["SolarisHandler", "handler"]
