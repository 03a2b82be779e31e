"""Purchase requests (P2, P3): resolved once, never deleted.

Revision ID: 0003_purchases
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_purchases"
down_revision = "0001_core"
branch_labels = ("purchases",)
depends_on = None

TS = sa.DateTime(timezone=True)
# Frozen copies of the constraints in purchase_models.py (a migration must not change with the models).
STATUS_CHECK = "status IN ('pending', 'approved', 'rejected')"
URGENCY_CHECK = "urgency IN ('baixa', 'média', 'alta', 'crítica')"
REVIEW_CHECK = "(status = 'pending' AND reviewed_at IS NULL) OR (status <> 'pending' AND reviewed_at IS NOT NULL)"
REASON_CHECK = "status <> 'rejected' OR length(note) > 0"


def upgrade() -> None:
    op.create_table(
        "purchase_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("urgency", sa.String(20), nullable=False),
        sa.Column("price_cents", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("reviewed_at", TS, nullable=True),
        sa.CheckConstraint("tokens > 0", name="ck_purchase_tokens_positive"),
        sa.CheckConstraint("price_cents >= 0", name="ck_purchase_price_nonneg"),
        sa.CheckConstraint(STATUS_CHECK, name="ck_purchase_status"),
        sa.CheckConstraint(URGENCY_CHECK, name="ck_purchase_urgency"),
        sa.CheckConstraint(REVIEW_CHECK, name="ck_purchase_reviewed"),
        sa.CheckConstraint(REASON_CHECK, name="ck_purchase_reject_reason"),
    )
    op.create_index("ix_purchase_requests_user_id", "purchase_requests", ["user_id"])
    op.create_index("ix_purchase_status_created", "purchase_requests", ["status", "created_at"])
    _resolve_once()


def _resolve_once() -> None:
    """Only a pending request may change, only its review fields, and no row is ever deleted."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION solaris_purchase_guard() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'solaris: purchase requests are never deleted';
              END IF;
              IF OLD.status <> 'pending' THEN
                RAISE EXCEPTION 'solaris: purchase request % is already %', OLD.id, OLD.status;
              END IF;
              IF NEW.id <> OLD.id OR NEW.user_id <> OLD.user_id OR NEW.tokens <> OLD.tokens
                 OR NEW.price_cents <> OLD.price_cents OR NEW.created_at <> OLD.created_at THEN
                RAISE EXCEPTION 'solaris: the terms of purchase request % are fixed', OLD.id;
              END IF;
              RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER purchase_requests_guard BEFORE UPDATE OR DELETE ON purchase_requests "
            "FOR EACH ROW EXECUTE FUNCTION solaris_purchase_guard()"
        )
    elif dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER purchase_requests_no_delete BEFORE DELETE ON purchase_requests "
            "BEGIN SELECT RAISE(ABORT, 'solaris: purchase requests are never deleted'); END"
        )
        op.execute(
            "CREATE TRIGGER purchase_requests_resolved_once BEFORE UPDATE ON purchase_requests "
            "WHEN OLD.status <> 'pending' "
            "BEGIN SELECT RAISE(ABORT, 'solaris: purchase request is already resolved'); END"
        )
        op.execute(
            "CREATE TRIGGER purchase_requests_terms_fixed BEFORE UPDATE ON purchase_requests "
            "WHEN NEW.id <> OLD.id OR NEW.user_id <> OLD.user_id OR NEW.tokens <> OLD.tokens "
            "OR NEW.price_cents <> OLD.price_cents OR NEW.created_at <> OLD.created_at "
            "BEGIN SELECT RAISE(ABORT, 'solaris: the terms of a purchase request are fixed'); END"
        )


def downgrade() -> None:
    op.drop_table("purchase_requests")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS solaris_purchase_guard()")
