"""Validation task: the Great Expectations checkpoint; a failure stops the flow."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.errors import DataValidationError
from cxr.core.runs import Run
from cxr.data.validation import ValidationReport, validate_images
from tasks.artifacts import publish_markdown


@task(name="validate", cache_policy=NO_CACHE)
def validate(images: pd.DataFrame, settings: Settings, run: Run) -> ValidationReport:
    """Run the suite; write ``validation.json`` and Data Docs; raise on failure."""
    report = validate_images(images, settings.data, run.path("data_docs", "index.html").parent)
    run.write_json(
        "validation.json",
        {"success": report.success, "evaluated": report.evaluated, "failures": report.failures,
         "data_docs": str(report.docs_index) if report.docs_index else None},
    )  # fmt: skip
    publish_markdown(
        "data-validation",
        f"```\n{report.message()}\n```\n\nData Docs: `{report.docs_index}`\n",
        f"run {run.run_id}: Great Expectations checkpoint",
    )
    if not report.success:
        get_run_logger().error(report.message())
        raise DataValidationError(f"{report.message()}\nnothing was trained (run {run.run_id})")
    get_run_logger().info(report.message())
    return report
