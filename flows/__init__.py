"""Prefect flows: training (this issue), monitoring (later)."""
