"""account credits: the ledger's sums per account, kept with every entry

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_credits",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("account_id"),
    )
    # Every account that has entries starts from its ledger's sums.
    op.execute(
        "INSERT INTO account_credits (account_id, balance_micros, reserved_micros) "
        "SELECT account_id, "
        "COALESCE(SUM(CASE WHEN kind IN ('grant', 'adjust') THEN amount_micros "
        "WHEN kind = 'charge' THEN -amount_micros ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN kind = 'reserve' THEN amount_micros "
        "WHEN kind = 'release' THEN -amount_micros ELSE 0 END), 0) "
        "FROM ledger_entries GROUP BY account_id"
    )


def downgrade() -> None:
    op.drop_table("account_credits")
