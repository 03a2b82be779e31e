"""Hot per-user counters: a narrow store interface and its Redis implementation."""

from solaris_tokens.counters.base import CounterStore, LedgerEvent, ProfileState, StoredCounters
from solaris_tokens.counters.redis import RedisCounterStore

__all__ = ["CounterStore", "LedgerEvent", "ProfileState", "RedisCounterStore", "StoredCounters"]
