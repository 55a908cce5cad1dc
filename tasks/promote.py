"""Promotion task: after packaging, decide whether the new model becomes production."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.train.promotion import challenge
from tasks.artifacts import publish_markdown

PROMOTED_EVENT, NOT_PROMOTED_EVENT = "cxr.model.promoted", "cxr.model.not_promoted"


@task(name="promote", cache_policy=NO_CACHE)
def promote_model(
    tags: dict[str, str | None], images: pd.DataFrame, settings: Settings, run: Run
) -> dict[str, object]:
    """Challenge the production model with the packaged one; the decision and both
    scores go to ``promotion.json``, ``metrics.json``, an artifact and an event. A running
    service keeps its model until it is restarted."""
    tag = str(tags["model_tag"])
    decision = challenge(
        tag, settings.packaging, run.path("promotion"), images, bento_tag=tags.get("bento_tag")
    )
    found = decision.to_dict()
    run.write_json("promotion.json", found)
    run.update_json("metrics.json", promotion=found)
    publish_markdown("promotion", decision.markdown(), f"run {run.run_id}: promotion decision")
    emit_event(
        event=PROMOTED_EVENT if decision.promoted else NOT_PROMOTED_EVENT,
        resource={"prefect.resource.id": f"cxr.model.{tag}", "prefect.resource.name": tag},
        payload=found,
    )
    logger = get_run_logger()
    (logger.info if decision.promoted else logger.warning)(decision.describe())
    return found
