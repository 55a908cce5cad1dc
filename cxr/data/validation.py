"""Data validation with Great Expectations 1.x: the suite in ``expectations/`` runs as a
checkpoint on the ingestion table and builds Data Docs into the run folder.

PNG/JPEG rows are held to the release (299x299, 8-bit grayscale); DICOM rows (``format``
"DICOM") to what a radiograph film needs instead: modality CR/DX, MONOCHROME1/2, 8-16
bits stored, a minimal size, no lateral view."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.result_format import ResultFormat
from great_expectations.data_context.types.base import ProgressBarsConfig

from cxr.core.config import DataConfig
from cxr.core.dicom import (
    GRAYSCALE_PHOTOMETRIC,
    LATERAL_VIEWS,
    RADIOGRAPH_MODALITIES,
    SUPPORTED_BITS_STORED,
)

SUITE_FILE = Path(__file__).resolve().parents[2] / "expectations" / "cxr_dataset.json"
SITE_NAME = "cxr_run_docs"


@dataclass
class ValidationReport:
    """Outcome of the checkpoint: success, the failed expectations, where the docs are."""

    success: bool
    evaluated: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    docs_index: Path | None = None

    def message(self) -> str:
        if self.success:
            return f"data validation passed ({self.evaluated} expectations)"
        lines = [f"data validation FAILED ({len(self.failures)} of {self.evaluated}):"]
        lines += [
            f"  - {f['expectation']} on {f['column'] or 'table'}: {f['detail']}"
            for f in self.failures
        ]
        return "\n".join(lines)


def suite_parameters(config: DataConfig) -> dict[str, Any]:
    """Values for the suite's ``$PARAMETER`` placeholders, from the run's config."""
    return {
        "image_width": config.expected_width,
        "image_height": config.expected_height,
        "classes": list(config.classes),
        "allowed_modes": list(config.allowed_modes),
        "min_positive_fraction": 0.5 - config.balance_tolerance,
        "max_positive_fraction": 0.5 + config.balance_tolerance,
        "min_readable_fraction": config.min_readable_fraction,
        "min_std_intensity": config.min_std_intensity,
        "min_total_images": config.min_images_per_class * len(config.classes),
        # DICOM films (rows with format "DICOM"), instead of the release's size and mode
        "dicom_modalities": list(RADIOGRAPH_MODALITIES),
        "dicom_photometric": list(GRAYSCALE_PHOTOMETRIC),
        "dicom_min_bits": SUPPORTED_BITS_STORED[0],
        "dicom_max_bits": SUPPORTED_BITS_STORED[1],
        "dicom_min_side": config.dicom_min_side,
        "lateral_views": list(LATERAL_VIEWS),
    }


def load_suite(path: Path = SUITE_FILE) -> gx.ExpectationSuite:
    """The stored suite; an expectation GX cannot parse is an error, not a silent drop."""
    raw = json.loads(path.read_text())
    suite = gx.ExpectationSuite(**raw)
    if len(suite.expectations) != len(raw["expectations"]):
        raise ValueError(f"{path}: {len(raw['expectations']) - len(suite.expectations)} invalid")
    return suite


def _checkpoint(docs_dir: Path) -> gx.Checkpoint:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for name in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(name)
    context.add_data_docs_site(
        site_name=SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
        },
    )
    asset = context.data_sources.add_pandas("images").add_dataframe_asset("image_table")
    batch = asset.add_batch_definition_whole_dataframe("all_images")
    suite = context.suites.add(load_suite())
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="cxr_dataset_validation", data=batch, suite=suite)
    )
    return context.checkpoints.add(
        gx.Checkpoint(
            name="cxr_dataset_checkpoint",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])],
            result_format=ResultFormat.SUMMARY,
        )
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _describe_failure(result: Any) -> dict[str, Any]:
    config, details = result.expectation_config, result.result or {}
    info = result.exception_info or {}
    infos = [info] if "raised_exception" in info else list(info.values())
    errors = [i.get("exception_message") for i in infos if isinstance(i, dict)]
    errors = [e for e in dict.fromkeys(errors) if e]
    if errors:
        detail = "error: " + "; ".join(errors)
    elif details.get("unexpected_count") is not None:
        examples = [_plain(v) for v in details.get("partial_unexpected_list") or []][:3]
        detail = (
            f"{details['unexpected_count']} unexpected "
            f"({details.get('unexpected_percent') or 0:.1f}%), e.g. {examples}"
        )
    else:
        detail = f"observed {_plain(details.get('observed_value'))!r}"
    return {"expectation": config.type, "column": config.kwargs.get("column"), "detail": detail}


def validate_images(images: pd.DataFrame, config: DataConfig, docs_dir: Path) -> ValidationReport:
    """Run the suite as a checkpoint on the ingestion table; Data Docs go to ``docs_dir``."""
    docs_dir = docs_dir.resolve()  # GX wants an absolute base directory
    docs_dir.mkdir(parents=True, exist_ok=True)
    result = _checkpoint(docs_dir).run(
        batch_parameters={"dataframe": images},
        expectation_parameters=suite_parameters(config),
    )
    outcomes = [r for run in result.run_results.values() for r in run.results]
    failures = [_describe_failure(r) for r in outcomes if not r.success]
    index = docs_dir / "index.html"
    return ValidationReport(
        success=bool(result.success),
        evaluated=len(outcomes),
        failures=failures,
        docs_index=index if index.exists() else None,
    )
