"""index trials by configuration: the best-configuration query groups by it

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trials_study_configuration", "magma_trials", ["study_id", "configuration"])


def downgrade() -> None:
    op.drop_index("ix_trials_study_configuration", table_name="magma_trials")
