"""The exception tree of solaris-tokens.

SolarisError
├── InvalidInput          bad tokens, ids, emails: the caller's fault, nothing changed
│   └── InvalidIdentity   no usable email on a request (the proxy answers 401)
├── UnknownUser           an admin action named an email that does not exist
├── StoreUnavailable      Redis could not be reached in time (the proxy answers 503)
├── LedgerUnavailable     the SQL database could not be reached
└── ConcurrentChange      an optimistic rebuild lost its race too many times
"""

from __future__ import annotations


class SolarisError(Exception):
    """Root of every error raised on purpose by solaris-tokens."""


class InvalidInput(SolarisError, ValueError):
    """A value the caller gave is not acceptable; no state was changed."""


class InvalidIdentity(InvalidInput):
    """The request carries no valid, trusted user email."""


class UnknownUser(SolarisError, LookupError):
    """No user with that email exists."""


class StoreUnavailable(SolarisError):
    """The counter store (Redis) did not answer in time."""


class LedgerUnavailable(SolarisError):
    """The ledger database did not answer."""


class ConcurrentChange(SolarisError):
    """The state kept changing while an exact rebuild was attempted."""
