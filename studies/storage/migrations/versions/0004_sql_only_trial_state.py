"""SQL is the only store of trial state: drop Optuna's RDB tables and
``magma_studies.optuna_study_name``

Up to revision 0003 the driver kept a second copy of every study's trial state in Optuna's
RDB storage, in the same database (study ``magma-bench-study-<id>``). Searchers now rebuild
their Optuna study in memory from ``magma_trials``, so that copy, and the column naming
it, go.

Optuna's tables are dropped only when every Optuna study in them is one of ours: a database
someone also kept their own Optuna studies in keeps them. Optuna's alembic version table
(``alembic_version``; ours is ``magma_alembic_version``) and, on PostgreSQL, its enum types
go with them.

Downgrade restores the column, not Optuna's tables: the old driver creates an empty Optuna
study, so a study that had configurations when downgraded cannot resume under the old code.

This revision is a snapshot: it imports nothing from the application.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Optuna's RDB tables (Optuna 4 and 5), each after every table that references it
OPTUNA_TABLES = (
    "trial_heartbeats",
    "trial_intermediate_values",
    "trial_values",
    "trial_params",
    "trial_system_attributes",
    "trial_user_attributes",
    "trials",
    "study_system_attributes",
    "study_user_attributes",
    "study_directions",
    "studies",
    "version_info",
    "alembic_version",
)
#: the PostgreSQL enum types of Optuna's columns, which outlive its tables
OPTUNA_ENUMS = ("studydirection", "trialstate", "trialvaluetype", "trialintermediatevaluetype")
OUR_OPTUNA_STUDIES = "magma-bench-study-"


def upgrade() -> None:
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    if {"studies", "version_info"} <= present:  # Optuna's storage is here
        names = bind.execute(sa.text("SELECT study_name FROM studies")).scalars().all()
        if all(name.startswith(OUR_OPTUNA_STUDIES) for name in names):
            for table in OPTUNA_TABLES:
                if table in present:
                    op.drop_table(table)
            if bind.dialect.name == "postgresql":
                op.execute(f"DROP TYPE IF EXISTS {', '.join(OPTUNA_ENUMS)}")
    with op.batch_alter_table("magma_studies") as batch:
        batch.drop_column("optuna_study_name")


def downgrade() -> None:
    with op.batch_alter_table("magma_studies") as batch:
        batch.add_column(
            sa.Column("optuna_study_name", sa.String(200), nullable=False, server_default="")
        )
    studies = sa.table(
        "magma_studies", sa.column("id", sa.Integer), sa.column("optuna_study_name", sa.String)
    )
    name = sa.literal(OUR_OPTUNA_STUDIES) + sa.cast(studies.c.id, sa.String)
    op.get_bind().execute(studies.update().values(optuna_study_name=name))
