"""Monthly renewal: period summaries (one per user and ended period, append-only).

Revision ID: 0004_renewal
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_renewal"
down_revision = "0001_core"
branch_labels = ("renewal",)
depends_on = None

TABLE = "period_summaries"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("monthly_limit", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("additional_used", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("efficiency_percent", sa.Integer, nullable=False),
        sa.Column("additional_end", sa.BigInteger, nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "period", name="uq_period_summary_once"),
        sa.CheckConstraint(
            "monthly_limit >= 0 AND used >= 0 AND additional_used >= 0 AND requests >= 0",
            name="ck_period_summary_nonneg",
        ),
    )
    op.create_index("ix_period_summaries_period", TABLE, ["period"])
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # solaris_append_only() comes with 0001_core.
        op.execute(
            f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION solaris_append_only()"
        )
    elif dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {TABLE}_no_{verb.lower()} BEFORE {verb} ON {TABLE} "
                f"BEGIN SELECT RAISE(ABORT, 'solaris: {TABLE} is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table(TABLE)
