"""The retraining deployment's drift trigger and concurrency limit as Prefect reads them
from deploy/prefect.yaml (no server: Prefect's own loaders), what `cxr deploy` makes of
the trigger, and the clear error for the removed `monitor.trigger_retraining`. The real
server and worker run them in test_worker_loop.py."""

from __future__ import annotations

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events.schemas.events import Resource

from cxr.cli import _drift_trigger
from cxr.core.config import load_settings
from cxr.core.errors import ConfigError
from tests.conftest import REPO


def _retraining() -> dict:
    raw = yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())
    PrefectYamlModel.model_validate(raw)  # what `prefect deploy` accepts
    (found,) = [d for d in raw["deployments"] if d["name"] == "scheduled-retraining"]
    return found


def _resource(tag: str) -> Resource:
    return Resource({"prefect.resource.id": f"cxr.model.{tag}"})


def test_one_retraining_at_a_time_and_a_newcomer_is_cancelled() -> None:
    limit = ConcurrencyLimitConfig.model_validate(_retraining()["concurrency_limit"])
    assert limit.limit == 1 and limit.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW


def test_the_trigger_is_off_in_the_file_and_on_with_retrain_on_drift() -> None:
    (in_file,) = _initialize_deployment_triggers("scheduled-retraining", _retraining()["triggers"])
    assert not in_file.enabled and in_file.expect == {"cxr.drift.detected"}
    assert in_file.parameters is None  # the deployment's own: its data folder as it is then
    (on,) = _initialize_deployment_triggers("x", [_drift_trigger("cxr-classifier", True)])
    assert on.enabled and on.expect == in_file.expect and on.posture == in_file.posture
    assert on.match.matches(_resource("cxr-classifier:abc123"))  # any version of the name
    assert not on.match.matches(_resource("cxr-test-lstm:abc123"))  # another model's drift
    (named,) = _initialize_deployment_triggers("x", [_drift_trigger("ward-model", False)])
    assert not named.enabled and named.match.matches(_resource("ward-model:v2"))


@pytest.mark.parametrize("key", ["monitor.trigger_retraining", "monitor.retraining_deployment"])
def test_the_removed_retraining_settings_say_what_replaced_them(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} was replaced by the retraining deployment"):
        load_settings(overrides={key: True}, environ={})
