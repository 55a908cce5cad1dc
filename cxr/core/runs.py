"""The run folder: every artifact of one run lives in ``<runs_dir>/<run-id>/``."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cxr.core.errors import ConfigError


def new_run_id() -> str:
    """Sortable, unique id: UTC time plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_run_id(runs_dir: Path, run_id: str) -> None:
    """Raise if ``run_id`` is not a safe folder name or its run folder already exists."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", run_id):
        raise ConfigError(f"run id {run_id!r}: use letters, digits, '.', '_', '-' only")
    if (Path(runs_dir) / run_id).exists():
        raise ConfigError(f"run folder {Path(runs_dir) / run_id} exists; pick a new id")


@dataclass(frozen=True)
class Run:
    """One run's id and folder."""

    run_id: str
    dir: Path

    @classmethod
    def create(cls, runs_dir: Path, run_id: str | None = None) -> Run:
        run_id = run_id or new_run_id()
        check_run_id(runs_dir, run_id)
        folder = Path(runs_dir).resolve() / run_id
        folder.mkdir(parents=True, exist_ok=False)
        return cls(run_id=run_id, dir=folder)

    def path(self, *parts: str) -> Path:
        """A path inside the run folder (parent folders are created)."""
        target = self.dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, name: str, data: Any) -> Path:
        target = self.path(name)
        target.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return target

    def update_json(self, name: str, **fields: Any) -> Path:
        """Add or replace top-level fields of a JSON file in the run folder. Tasks running
        at once (on Dask workers) may update one file: a lock on the run folder makes the
        updates take turns, and the file is replaced whole, never seen half written."""
        target = self.path(name)
        folder = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            data = json.loads(target.read_text()) if target.exists() else {}
            data.update(fields)
            staged = target.with_name(f".{target.name}.{os.getpid()}")
            staged.write_text(json.dumps(data, indent=2, default=str) + "\n")
            os.replace(staged, target)
        finally:
            os.close(folder)  # releases the lock
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.path(name)
        target.write_text(text)
        return target


def git_commit(cwd: Path | None = None) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
