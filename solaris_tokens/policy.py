"""Pure rules: periods, token validation, thresholds, prices. No I/O."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from solaris_tokens.errors import InvalidInput

_PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar month in UTC, named YYYY-MM."""

    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Period:
        if moment.tzinfo is None:
            raise InvalidInput("timestamps must be timezone-aware")
        utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
        return _period(utc.year, utc.month)

    @classmethod
    def parse(cls, name: str) -> Period:
        match = _PERIOD_RE.match(name.strip())
        if not match:
            raise InvalidInput(f"period must look like YYYY-MM, got {name!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        return _period_name(self.year, self.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @property
    def end(self) -> datetime:
        """The first instant of the next period: the spec's `next_reset`."""
        return _period_end(self.year, self.month)

    def __str__(self) -> str:
        return self.name


# Every request asks for the current period: cache the few that ever occur in one process.
@lru_cache(maxsize=64)
def _period(year: int, month: int) -> Period:
    return Period(year, month)


@lru_cache(maxsize=64)
def _period_name(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


@lru_cache(maxsize=64)
def _period_end(year: int, month: int) -> datetime:
    return Period(year, month).next.start


def require_tokens(value: object, what: str, *, cap: int, allow_zero: bool = True) -> int:
    """Accept only a true integer in [0, cap] (or [1, cap]); floats, bools, NaN and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            raise InvalidInput(f"{what} must be an integer, got float {value!r}")
        raise InvalidInput(f"{what} must be an integer, got {value!r}")
    low = 0 if allow_zero else 1
    if value < low:
        raise InvalidInput(f"{what} must be >= {low}, got {value}")
    if value > cap:
        raise InvalidInput(f"{what} exceeds the configured cap of {cap}, got {value}")
    return value


def percent_reached(used: int, limit: int, percent: int) -> bool:
    """Integer comparison: has `used` reached `percent`% of `limit`?"""
    return limit > 0 and used * 100 >= percent * limit


def name_from_email(email: str) -> str:
    """`maria.silva@x.com` → `Maria Silva` (SPEC F2)."""
    local = email.split("@", 1)[0].split("+", 1)[0]
    words = [w for w in re.split(r"[._\-]+", local) if w]
    return " ".join(w.capitalize() for w in words) or local
