"""``nodes.schedule_digest``: the digest of a node's poll jobs (account, trigger,
interval), written by every heartbeat; live nodes with equal digests divide their polls
among themselves (issue 16: PostgreSQL at full schedule, several nodes)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("schedule_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("schedule_digest")
