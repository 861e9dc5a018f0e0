"""Alembic environment: runs on the connection handed over by ``engine.migrate``."""

from alembic import context

from studies.storage.models import Base

connection = context.config.attributes["connection"]
# Our own version table and only our tables: Optuna's RDB storage kept its tables and
# alembic's default version table here until 0004, and a shared database may hold others.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    version_table="magma_alembic_version",
    include_name=lambda name, type_, _parent: type_ != "table" or name.startswith("magma_"),
)
with context.begin_transaction():
    context.run_migrations()
