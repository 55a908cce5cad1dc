"""Thin Prefect tasks: each calls plain functions from ``cxr`` and publishes artifacts."""
