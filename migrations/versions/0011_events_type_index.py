"""an index on ``events.type``: the console's events page filtered by a type few events
have is answered from it (issue 15)

``EventRepository.page`` reads a filter exactly when an index names at most 5,000 events
for part of it; without this index a type filter could only be answered by reading the
newest events in turn. Building it reads ``events`` once (a few seconds per million events).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_type", "events", ["type"])


def downgrade() -> None:
    op.drop_index("ix_events_type", table_name="events")
