"""index the failed predictions that still hold their inputs, by when they ended

A failed prediction keeps its inputs until the retention sweep removes them (failed_inputs_ttl_s); the
sweep finds them through this index instead of reading every prediction, and a prediction leaves it once
its inputs are gone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (schema.FAILED_KEEPING_INPUT_SQL must stay word for word the same).
FAILED_KEEPING_INPUT = sa.text("status IN ('failed', 'timed_out') AND NOT data_removed")


def upgrade() -> None:
    op.create_index(
        "ix_predictions_failed_inputs",
        "predictions",
        ["completed_at"],
        unique=False,
        sqlite_where=FAILED_KEEPING_INPUT,
        postgresql_where=FAILED_KEEPING_INPUT,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_failed_inputs", table_name="predictions")
