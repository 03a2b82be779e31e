"""Core ledger: users, usage and credit entries, audit log, outbox, rejections.

Revision ID: 0001_core
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("usage_entries", "credit_entries", "audit_log")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("monthly_limit", sa.BigInteger, nullable=True),
        sa.Column("warning_percent", sa.Integer, nullable=True),
        sa.Column("urgent_percent", sa.Integer, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("suspended_until", TS, nullable=True),
        sa.Column("suspend_reason", sa.String(500), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("monthly_limit IS NULL OR monthly_limit >= 0", name="ck_users_limit_nonneg"),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_users_status"),
    )
    op.create_index("ix_users_email", "users", ["email"], unique=True)

    op.create_table(
        "usage_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("reservation_id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("monthly_tokens", sa.BigInteger, nullable=False),
        sa.Column("additional_tokens", sa.BigInteger, nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("settled_at", TS, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=True),
        sa.CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0 AND monthly_tokens >= 0 AND additional_tokens >= 0",
            name="ck_usage_nonneg",
        ),
        sa.CheckConstraint(
            "monthly_tokens + additional_tokens = prompt_tokens + completion_tokens", name="ck_usage_split"
        ),
    )
    op.create_index("ix_usage_user_period", "usage_entries", ["user_id", "period"])
    op.create_index("ix_usage_entries_settled_at", "usage_entries", ["settled_at"])

    op.create_table(
        "credit_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_credit_positive"),
        sa.CheckConstraint("kind IN ('purchase', 'bonus', 'compensation', 'adjustment')", name="ck_credit_kind"),
    )
    op.create_index("ix_credit_entries_user_id", "credit_entries", ["user_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("target", sa.String(254), nullable=False),
        sa.Column("before", sa.Text, nullable=False),
        sa.Column("after", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.UniqueConstraint("recipient", "kind", "dedupe_key", name="uq_outbox_once"),
        sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="ck_outbox_status"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])

    op.create_table(
        "rejections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("estimate", sa.BigInteger, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_rejections_email", "rejections", ["email"])
    op.create_index("ix_rejections_at", "rejections", ["at"])

    _append_only(APPEND_ONLY)


def _append_only(tables: tuple[str, ...]) -> None:
    """Ledger rows are never updated or deleted: corrections are new rows (enforced by triggers)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION solaris_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'solaris: % is append-only', TG_TABLE_NAME;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        for table in tables:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION solaris_append_only()"
            )
    elif dialect == "sqlite":
        for table in tables:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'solaris: {table} is append-only'); END"
                )


def downgrade() -> None:
    for table in ("rejections", "outbox", "audit_log", "credit_entries", "usage_entries", "users"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS solaris_append_only()")
