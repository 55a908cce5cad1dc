"""Champion / challenger promotion: the decision rule, the paired test and the record
(in the session's BentoML store, under model names no other test uses)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import bentoml
import numpy as np
import pytest

from cxr.core.errors import DataInputError
from cxr.core.model_store import get_stored
from cxr.core.production import (
    RECORD_FILE,
    current_production,
    production_history,
    production_tag,
    read_record,
    record_path,
    resolve_tag,
)
from cxr.train.promotion import Comparison, decide, mcnemar_exact, paired, promote, rollback


def _comparison(challenger: float, champion: float, n: int = 100) -> Comparison:
    return Comparison("unseen", n, challenger, champion, challenger - champion, 0, 0, 1.0)


def test_the_first_model_is_promoted() -> None:
    decision = decide("m:new", None, None, 0.02)
    assert decision.promoted and decision.champion is None and "first" in decision.reason


def test_without_a_comparison_set_a_gated_model_is_promoted_and_says_so() -> None:
    decision = decide("m:new", "m:old", None, 0.02)
    assert decision.promoted and "no comparison set" in decision.reason


def test_a_challenger_worse_beyond_the_margin_is_not_promoted() -> None:
    decision = decide("m:new", "m:old", _comparison(0.90, 0.95), 0.02)
    assert not decision.promoted and "worse beyond the margin" in decision.reason
    assert decision.to_dict()["comparison"]["champion_accuracy"] == 0.95


@pytest.mark.parametrize("challenger", [0.93, 0.95, 0.99])
def test_a_challenger_as_good_or_within_the_margin_is_promoted(challenger: float) -> None:
    assert decide("m:new", "m:old", _comparison(challenger, 0.95), 0.02).promoted


def test_a_zero_margin_refuses_any_loss() -> None:
    assert not decide("m:new", "m:old", _comparison(0.94, 0.95), 0.0).promoted


def test_paired_comparison_counts_discordant_images_and_tests_them() -> None:
    challenger = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    champion = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1], bool)
    found = paired(challenger, champion, "set")
    assert (found.images, found.only_challenger_right, found.only_champion_right) == (10, 5, 0)
    assert found.challenger_accuracy == 0.8 and found.champion_accuracy == 0.3
    assert found.difference == pytest.approx(0.5)
    assert found.mcnemar_p == pytest.approx(2 * 0.5**5)  # exact: 5 of 5 discordant one way
    assert paired(champion, champion, "set").mcnemar_p == 1.0  # no discordant image
    with pytest.raises(ValueError, match="same"):
        paired(challenger, champion[:5], "set")


def test_mcnemar_is_symmetric_and_not_significant_for_balanced_disagreement() -> None:
    assert mcnemar_exact(3, 9) == pytest.approx(mcnemar_exact(9, 3))
    assert mcnemar_exact(6, 6) == 1.0 and mcnemar_exact(0, 10) < 0.01


def test_the_history_pushes_promotions_and_pops_rollbacks() -> None:
    entries = [{"action": "promote", "tag": t} for t in ("m:a", "m:b", "m:c")]
    assert production_history(entries) == ["m:a", "m:b", "m:c"]
    entries += [{"action": "rollback", "tag": "m:b"}, {"action": "rollback", "tag": "m:a"}]
    assert production_history(entries) == ["m:a"]


def _stored(name: str, run_id: str) -> str:
    """A small entry in the store (no Keras model: the record reads metadata only)."""
    metadata = {"run_id": run_id, "dataset_fingerprint": f"fp-{run_id}", "git_commit": "abc"}
    metadata["test_metrics"] = {"accuracy": 0.97}
    with bentoml.models.create(name, metadata=metadata) as stored:
        Path(stored.path_of("model.keras")).write_text("not a model")
    return str(stored.tag)


def test_promote_and_rollback_move_production_and_are_recorded() -> None:
    name = f"cxr-promo-{uuid.uuid4().hex[:8]}"
    first, second, third = (_stored(name, f"run-{i}") for i in range(3))
    assert current_production(name) is None
    assert production_tag(name) == third  # no record: the latest model
    assert resolve_tag(f"{name}:production") == third
    assert resolve_tag(f"{name}:latest") == f"{name}:latest"  # other tags unchanged

    promote(first, "test", "first")
    with pytest.raises(DataInputError, match="already the production model"):
        promote(first, "test", "again")
    entry = promote(second, "test", "better")
    assert entry["previous"] == first and entry["dataset_fingerprint"] == "fp-run-1"
    assert entry["git_commit"] == "abc" and entry["test_metrics"] == {"accuracy": 0.97}
    assert str(get_stored(f"{name}:production").tag) == second  # what the service loads

    back = rollback(name, "test")
    assert back["action"] == "rollback" and back["tag"] == first and back["previous"] == second
    assert production_tag(name) == first
    with pytest.raises(DataInputError, match="nothing to roll back to"):
        rollback(name, "test")

    record = record_path(name)
    assert record.name == RECORD_FILE and record.parent == Path(get_stored(first).path).parent
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["promote", "promote", "rollback"]
    assert lines == read_record(name) and all("time" in line for line in lines)
    assert {str(m.tag) for m in bentoml.models.list(name)} == {first, second, third}


def test_a_production_model_deleted_from_the_store_is_a_clear_error() -> None:
    name = f"cxr-promo-{uuid.uuid4().hex[:8]}"
    kept, gone = _stored(name, "kept"), _stored(name, "gone")
    promote(gone, "test", "to be deleted")
    bentoml.models.delete(gone)
    assert str(get_stored(f"{name}:latest").tag) == kept
    with pytest.raises(DataInputError, match="not in the BentoML store any more"):
        resolve_tag(f"{name}:production")


def test_an_unknown_model_name_is_a_clear_error() -> None:
    assert resolve_tag("cxr-nothing-here:production") == "cxr-nothing-here:production"
    with pytest.raises(DataInputError, match="'cxr-nothing-here:production' not found"):
        get_stored("cxr-nothing-here:production")
    with pytest.raises(DataInputError, match="no model named"):
        production_tag("cxr-nothing-here")


def test_a_missing_comparison_set_is_refused_even_for_the_first_model(tmp_path: Path) -> None:
    from cxr.core.config import PackagingConfig
    from cxr.train.promotion import challenge

    name = f"cxr-promo-{uuid.uuid4().hex[:8]}"
    tag = _stored(name, "first")
    config = PackagingConfig(comparison_dir=tmp_path / "nowhere")
    with pytest.raises(DataInputError, match="packaging.comparison_dir: data folder not found"):
        challenge(tag, config, tmp_path / "out")
    assert current_production(name) is None
    assert challenge(tag, PackagingConfig(), tmp_path / "out").promoted  # first model
    assert current_production(name) == tag
