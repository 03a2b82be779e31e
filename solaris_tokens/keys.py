"""The one place Redis key names are built.

Every key of a user shares the hash tag of the user's shard, and so does that shard's ledger
stream: one script call touches a single Redis Cluster slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class UserKeys:
    profile: str
    reservations: str
    reservation_expiry: str
    settled: str
    reverted: str
    credits: str
    stream: str
    period_prefix: str

    def period(self, name: str) -> str:
        return f"{self.period_prefix}{name}"


@dataclass(frozen=True, slots=True)
class KeyBuilder:
    prefix: str = "sol"
    shards: int = 16

    def shard(self, email: str) -> int:
        return zlib.crc32(email.encode()) % self.shards

    def stream(self, shard: int) -> str:
        return f"{self.prefix}:{{s{shard}}}:ledger"

    def streams(self) -> list[str]:
        return [self.stream(s) for s in range(self.shards)]

    def user(self, email: str) -> UserKeys:
        return _user_keys(self, email)

    def _build_user(self, email: str) -> UserKeys:
        shard = self.shard(email)
        base = f"{self.prefix}:{{s{shard}}}:u:{email}:"
        return UserKeys(
            profile=base + "profile",
            reservations=base + "res",
            reservation_expiry=base + "resx",
            settled=base + "settled",
            reverted=base + "reverted",
            credits=base + "credits",
            stream=self.stream(shard),
            period_prefix=base + "p:",
        )

    def pattern(self) -> str:
        return f"{self.prefix}:*"


@lru_cache(maxsize=65_536)
def _user_keys(builder: KeyBuilder, email: str) -> UserKeys:
    """Key names are built on every request: cache them per (builder, email)."""
    return builder._build_user(email)
