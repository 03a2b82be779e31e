"""One typed settings object, read from the environment (prefix SOLARIS_)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    sqlite_path: Path = Field(default=Path("solaris_tokens.db"), description="The embedded ledger file.")
    state_dir: Path = Field(default=Path(".solaris"), description="Embedded-mode files (Redis stand-in address).")
    key_prefix: str = Field(
        default="sol", description="Prefix of every Redis key (several installs can share one Redis)."
    )
    shards: int = Field(default=16, ge=1, le=1024, description="Ledger stream shards; fixed once deployed.")
    redis_timeout_seconds: float = Field(
        default=0.5, gt=0, description="Deadline of one counter operation; past it the proxy answers 503."
    )
    redis_max_connections: int = Field(
        default=512, ge=1, description="Redis pool size; callers wait for a free connection instead of failing."
    )
    redis_pipeline: bool = Field(
        default=True,
        description=(
            "Send reserve, settle and release over one pipelined connection per process (plain TCP or Unix"
            " socket); false = redis-py's pool for every call."
        ),
    )

    # --- quota
    default_plan: str = Field(default="basic", description="Plan of auto-provisioned users.")
    plans_file: Path | None = Field(default=None, description="TOML file adding or replacing plans (see Plans).")
    reservation_ttl_seconds: int = Field(
        default=900, ge=1, description="A reservation not settled by then (crashed proxy) stops counting."
    )
    settle_batch_seconds: float = Field(
        default=0.2,
        ge=0,
        le=5,
        description=(
            "Settles of finished calls wait this long to run together (one warm-up, one write to Redis);"
            " 0 = settle inside the success hook."
        ),
    )
    settle_batch_max: int = Field(default=64, ge=1, description="A batch of settles this large runs at once.")
    settled_id_retention_seconds: int = Field(
        default=2 * 24 * 3600, ge=60, description="How long Redis remembers settled ids (the ledger guards after that)."
    )
    max_request_tokens: int = Field(default=10_000_000, ge=1, description="Usage above this is refused.")
    max_credit_tokens: int = Field(default=1_000_000_000, ge=1, description="Largest credit or monthly limit accepted.")

    # --- estimate (F3)
    fallback_estimate: int = Field(default=100, ge=1, description="Used when estimation fails.")
    default_completion_estimate: int = Field(
        default=400, ge=0, description="Expected completion tokens when the request sets no max_tokens."
    )

    # --- request path (F1, F8)
    identity_header: str = Field(
        default="X-User-Email", description="Header carrying the user's email (trusted keys only)."
    )
    trusted_key_aliases: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="LiteLLM key aliases whose identity header is believed (comma separated)."
    )
    trusted_key_hashes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="LiteLLM key hashes (sha256) whose identity header is believed."
    )
    fail_open: bool = Field(default=False, description="Let requests through (unmetered) while Redis is down.")
    retry_after_seconds: int = Field(default=30, description="Retry-After of 503 answers.")
    maintenance_message: str = Field(
        default="O sistema de controle de tokens está em manutenção. Tente novamente em alguns instantes.",
        description="pt-BR message of 503 answers while Redis is down.",
    )
    flush_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the proxy writes settled usage to the ledger."
    )
    flush_batch_size: int = Field(default=2000, ge=1, description="Ledger entries per write.")

    # --- the LiteLLM proxy adapter (solaris_tokens/proxy; issue 3)
    proxy_flush_ledger: bool = Field(
        default=True,
        description="Run the ledger flusher inside the proxy. Set false when Celery beat runs "
        "solaris.ledger.flush, to keep SQL work off the proxy's event loop.",
    )
    proxy_deliver_emails: bool = Field(
        default=False,
        description="Deliver outbox emails from the proxy itself (scripts/serve turns it on in embedded mode, "
        "where no Celery worker runs).",
    )
    redis_warm_connections: int = Field(
        default=256,
        ge=0,
        description="Redis connections the proxy opens at start, so a burst of requests does not spend "
        "the Redis deadline on connecting.",
    )

    @field_validator("trusted_key_aliases", "trusted_key_hashes", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Comma separated in the environment (a JSON list is accepted too)."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # --- workers
    celery_broker_url: str | None = Field(
        default=None, description="Unset: redis_url; with neither set, a SQLite file next to the ledger's."
    )
    celery_result_backend: str | None = None

    # --- monthly renewal and the admins' report (R1–R3; issue 6). Recipients: admin_emails.
    renewal_grace_seconds: int = Field(
        default=60, ge=0, le=3600, description="Wait after 00:00 UTC so requests settling at the turn are counted."
    )
    renewal_batch_size: int = Field(default=1000, ge=1, le=10_000, description="Users per renewal transaction.")
    report_top_consumers: int = Field(default=10, ge=1, le=1000)
    report_anomaly_factor: int = Field(
        default=3, ge=2, description="Month-over-month growth or drop (×) that flags a user as anomalous."
    )
    report_anomaly_min_tokens: int = Field(default=100_000, ge=0, description="Smaller months are never anomalous.")
    report_pace_days: int = Field(default=7, ge=1, le=28, description="Recent days the new month's projection uses.")

    # --- links (E1)
    public_base_url: str = Field(
        default="http://localhost:4000", description="Base of the absolute links in emails and messages."
    )
    purchase_path: str = Field(default="/api/tokens/purchase", description="Where users buy tokens.")
    support_path: str = Field(default="/api/support/contact", description="Where users reach support.")

    # --- email delivery (notify/, SPEC A1-A5; issue 4)
    smtp_host: str | None = Field(default=None, description="Unset: emails are written as .eml files to email_dir.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: bool = Field(default=False, description="Implicit TLS from the first byte (SMTPS, usually port 465).")
    smtp_starttls: bool = Field(default=True, description="Upgrade the plain connection with STARTTLS (port 587).")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    email_from: str = "IA SOLARIS <nao-responda@localhost>"
    email_dir: Path | None = Field(default=None, description="Where .eml files go without SMTP; unset: state_dir/mail.")
    email_templates_dir: Path | None = Field(
        default=None, description="Operator overrides: a file here replaces the packaged template of the same name."
    )
    email_batch_size: int = Field(default=50, ge=1)
    email_max_attempts: int = Field(default=12, ge=1, description="Attempts before a message is marked failed.")
    email_retry_base_seconds: int = Field(default=60, ge=1, description="First retry delay; doubles per attempt.")
    email_retry_max_seconds: int = Field(default=3600, ge=1)
    email_sending_lease_seconds: int = Field(
        default=600, ge=30, description="A message left in 'sending' this long (worker lost) is claimed again."
    )
    email_delivery_interval_seconds: float = Field(default=5.0, gt=0, description="Beat period of the delivery task.")
    statement_path: str = "/api/tokens/statement"
    forecast_window_days: int = Field(default=7, ge=1, description="Days of usage behind the exhaustion estimate.")

    # --- purchase requests and admin notices (P2, P3; issue 5)
    price_cents_per_1000_tokens: int = Field(
        default=5, ge=0, description="Estimated price in centavos per 1,000 tokens (R$ 0,05: 500.000 = R$ 25,00)."
    )
    admin_emails: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Admins notified of new purchase requests (comma separated in the env)."
    )

    @field_validator("admin_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @cached_property
    def plans(self) -> dict[str, Plan]:
        return load_plans(self.plans_file)

    def plan(self, name: str | None) -> Plan:
        return self.plans.get(name or self.default_plan) or self.plans[self.default_plan]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"
