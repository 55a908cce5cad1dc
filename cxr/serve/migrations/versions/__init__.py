"""The prediction log's revisions, oldest first by ``down_revision``."""
