"""poll_state.definition_fingerprint: a trigger's dedupe definition, to re-seed on a change
(issue 14)

Existing rows get NULL: their next successful poll adopts the definition it runs with,
without a re-seed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("poll_state") as batch_op:
        batch_op.add_column(
            sa.Column("definition_fingerprint", sa.String(length=200), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("poll_state") as batch_op:
        batch_op.drop_column("definition_fingerprint")
