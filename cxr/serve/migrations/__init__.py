"""Alembic migrations of the prediction log (run by ``cxr.serve.prediction_log.migrate``)."""
