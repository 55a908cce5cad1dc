"""Data stages: ingestion, Great Expectations validation, the split, near-duplicates,
holdout sets and synthetic demo data."""
