"""Environment defaults every entry point applies before importing Prefect or BentoML."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr.environment import apply_defaults


def test_new_prefect_and_bentoml_homes_are_created_with_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefect, bento = tmp_path / "new" / "prefect", tmp_path / "other" / "deep" / "bento"
    monkeypatch.setenv("PREFECT_HOME", str(prefect))
    monkeypatch.setenv("BENTOML_HOME", str(bento))
    apply_defaults()
    assert prefect.is_dir() and bento.is_dir()


def test_a_home_that_cannot_be_created_stops_with_a_message_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PREFECT_HOME", str(blocker / "prefect"))
    with pytest.raises(SystemExit, match="PREFECT_HOME=.*a-file/prefect: cannot create"):
        apply_defaults()
