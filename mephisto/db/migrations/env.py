"""Alembic environment: runs on the connection `MephistoDB` hands over.

`mephisto.db.migrate` puts an open connection in `config.attributes["connection"]`;
there is no alembic.ini and no URL here.
"""

from alembic import context

from mephisto.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running alembic by hand
    raise RuntimeError("run migrations through mephisto.db.migrate.upgrade()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite needs batch mode to alter tables
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
