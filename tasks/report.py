"""Report task: ``metrics.json`` and the paper comparison for the whole run."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from cxr.core.runs import Run
from cxr.train.reporting import comparison_markdown
from tasks.artifacts import publish_markdown


@task(name="report", cache_policy=NO_CACHE)
def report(results: dict[str, dict], run_info: dict, run: Run) -> dict:
    """Write ``metrics.json`` and ``comparison.md`` and publish the comparison."""
    run.update_json("metrics.json", **run_info, models=results)
    markdown = comparison_markdown(results, synthetic=bool(run_info.get("synthetic")))
    run.write_text("comparison.md", markdown)
    publish_markdown("paper-comparison", markdown, f"run {run.run_id}: this run vs the paper")
    return results
