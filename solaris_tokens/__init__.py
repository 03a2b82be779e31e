"""solaris-tokens: per-user token quotas for a LiteLLM proxy."""

from solaris_tokens.domain import (
    AlertKind,
    CreditKind,
    Decision,
    ReleaseOutcome,
    Settlement,
    SettleOutcome,
    Snapshot,
    Usage,
    UserStatus,
    Verdict,
)
from solaris_tokens.errors import (
    InvalidIdentity,
    InvalidInput,
    LedgerUnavailable,
    SolarisError,
    StoreUnavailable,
    UnknownUser,
)
from solaris_tokens.policy import Period
from solaris_tokens.quota import QuotaService
from solaris_tokens.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AlertKind",
    "CreditKind",
    "Decision",
    "InvalidIdentity",
    "InvalidInput",
    "LedgerUnavailable",
    "Period",
    "QuotaService",
    "ReleaseOutcome",
    "Settings",
    "SettleOutcome",
    "Settlement",
    "Snapshot",
    "SolarisError",
    "StoreUnavailable",
    "UnknownUser",
    "Usage",
    "UserStatus",
    "Verdict",
    "__version__",
]
