"""Training task: one per model, so the Prefect UI shows each model's run."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext

from cxr.core.config import ModelName, Settings
from cxr.core.runs import Run
from cxr.data.dataset import Arrays
from cxr.train.devices import compute_devices
from cxr.train.progress import EpochReport, log_report
from cxr.train.reporting import plot_training_curves
from cxr.train.training import TrainedModel, train_model
from tasks.artifacts import publish_image, publish_progress


class RunProgress:
    """Reporting function for :class:`cxr.train.progress.EpochProgress`: each epoch's line
    goes to the Prefect run's log and moves the model's progress artifact
    (``<model>-training-progress``, percent of the fit's epochs). Outside a Prefect run the
    line goes to the ``cxr.train`` logger and nothing else happens. A progress update the
    API refuses is logged as a warning; the training goes on."""

    def __init__(self, model: str, run_id: str) -> None:
        self.key = f"{model}-training-progress"
        self.run_id = run_id
        self.artifact_id: UUID | None = None

    def __call__(self, report: EpochReport) -> None:
        if TaskRunContext.get() is None and FlowRunContext.get() is None:
            log_report(report)
            return
        logger = get_run_logger()
        logger.info(report.line())
        status = f"epoch {report.epoch}/{report.epochs}"
        if "val_accuracy" in report.metrics:
            status += f", val_accuracy {report.metrics['val_accuracy']:.4f}"
        description = f"run {self.run_id}: {report.model} training, {status}"
        try:
            self.artifact_id = publish_progress(
                self.key, report.percent, description, self.artifact_id
            )
        except Exception as error:  # noqa: BLE001 - the API's trouble must not stop a fit
            logger.warning("%s: progress artifact not updated (%s)", report.model, error)


@task(name="train", task_run_name="train-{name}", cache_policy=NO_CACHE)
def train(
    name: ModelName,
    arrays: dict[str, Arrays],
    settings: Settings,
    run: Run,
    baseline: TrainedModel | None = None,
) -> TrainedModel:
    """Fit one model and keep its best-validation checkpoint (``baseline``: the trained
    ResNet50 the hybrid may start from). The devices it trained on and the batch each
    took go in ``metrics.json`` (``training_devices``; the same for every model). Each
    epoch is a line in the run's log and a step of the ``<model>-training-progress``
    artifact as it ends."""
    logger = get_run_logger()
    logger.info("training %s on %s", name, compute_devices())
    trained = train_model(
        name, arrays["train"], arrays["val"], settings, run.path("models"), baseline,
        report=RunProgress(name, run.run_id),
    )  # fmt: skip
    run.update_json("metrics.json", training_devices=trained.devices)
    logger.info("%s trained on %s", name, trained.devices)
    curves = plot_training_curves(name, trained.history, run.path("plots", f"{name}_curves.png"))
    publish_image(f"{name}-training-curves", curves, f"run {run.run_id}: {name} loss/accuracy")
    logger.info(
        "%s: best epoch %d; %.0f s, %.1f training images/s",
        name, trained.best_epoch + 1, trained.seconds, trained.images_per_second,
    )  # fmt: skip
    return trained
