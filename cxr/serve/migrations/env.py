"""Alembic environment of the prediction log. Migrations run only on the connection that
``cxr.serve.prediction_log.migrate`` hands over, inside its locked transaction (no
``alembic.ini``: the configuration is built in code)."""

from __future__ import annotations

from alembic import context

from cxr.serve.prediction_log import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the prediction log is migrated by cxr.serve.prediction_log.migrate(url) "
        "(or create_log_engine), not by the alembic command line"
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
