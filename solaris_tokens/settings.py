"""One typed settings object, read from the environment (prefix SOLARIS_)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from solaris_tokens.plans import Plan, load_plans


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOLARIS_", extra="ignore", frozen=False)

    # --- storage
    redis_url: str | None = Field(
        default=None, description="Unset: an embedded in-process Redis emulation (fakeredis) runs the same Lua."
    )
    database_url: str | None = Field(
        default=None, description="Unset: a SQLite file in the working directory. Postgres: postgresql+psycopg://..."
    )
    sqlite_path: Path = Path("solaris_tokens.db")
    state_dir: Path = Field(default=Path(".solaris"), description="Embedded-mode files (Redis stand-in address).")
    key_prefix: str = "sol"
    shards: int = Field(default=16, ge=1, le=1024, description="Ledger stream shards; fixed once deployed.")
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    redis_max_connections: int = Field(default=512, ge=1)

    # --- quota
    default_plan: str = "basic"
    plans_file: Path | None = None
    reservation_ttl_seconds: int = Field(default=900, ge=1)
    settled_id_retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    max_request_tokens: int = Field(default=10_000_000, ge=1, description="Usage above this is refused.")
    max_credit_tokens: int = Field(default=1_000_000_000, ge=1)

    # --- estimate (F3)
    fallback_estimate: int = Field(default=100, ge=1, description="Used when estimation fails.")
    default_completion_estimate: int = Field(default=400, ge=0)

    # --- request path (F1, F8)
    identity_header: str = "X-User-Email"
    trusted_key_aliases: list[str] = Field(default_factory=list)
    trusted_key_hashes: list[str] = Field(default_factory=list)
    fail_open: bool = False
    retry_after_seconds: int = 30
    maintenance_message: str = (
        "O sistema de controle de tokens está em manutenção. Tente novamente em alguns instantes."
    )
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    flush_batch_size: int = Field(default=1000, ge=1)

    # --- workers
    celery_broker_url: str | None = Field(default=None, description="Unset: the counter store's Redis.")
    celery_result_backend: str | None = None

    # --- links (E1)
    public_base_url: str = "http://localhost:4000"
    purchase_path: str = "/api/tokens/purchase"
    support_path: str = "/api/support/contact"

    @cached_property
    def plans(self) -> dict[str, Plan]:
        return load_plans(self.plans_file)

    def plan(self, name: str | None) -> Plan:
        return self.plans.get(name or self.default_plan) or self.plans[self.default_plan]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"
