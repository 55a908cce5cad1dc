"""One table of exit codes: the CLI's help and the README list it whole."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cxr.cli import app
from cxr.core.errors import EXIT_CODES, MONITOR_STATUS_EXIT, ExitCode

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_exit_code_with_its_meaning() -> None:
    text = README.read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {int(code)} | {meaning} |" in text
    assert set(EXIT_CODES) == set(ExitCode)


def test_help_lists_the_codes_and_monitoring_statuses_map_onto_them() -> None:
    shown = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert all(meaning in shown for meaning in EXIT_CODES.values())
    assert set(MONITOR_STATUS_EXIT.values()) <= set(ExitCode)
