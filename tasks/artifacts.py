"""Publishing run artifacts to Prefect so the UI shows them beside the run folder."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


def artifact_key(*parts: str) -> str:
    """Prefect keys allow lowercase letters, numbers and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def publish_markdown(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(table=rows, key=artifact_key(key), description=description)


def publish_image(key: str, png: Path, description: str) -> None:
    """Embed a PNG from the run folder as a data URL (the UI has no access to the disk)."""
    encoded = base64.b64encode(png.read_bytes()).decode()
    create_image_artifact(
        image_url=f"data:image/png;base64,{encoded}",
        key=artifact_key(key),
        description=f"{description} (file: {png})",
    )


def publish_progress(
    key: str, percent: float, description: str, artifact_id: UUID | None = None
) -> UUID:
    """Create a progress artifact (``artifact_id`` None) or move an existing one to
    ``percent`` (0-100); returns its id for the next update."""
    if artifact_id is None:
        return create_progress_artifact(
            progress=percent, key=artifact_key(key), description=description
        )
    return update_progress_artifact(artifact_id, progress=percent, description=description)
