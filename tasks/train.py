"""Training task: one per model, so the Prefect UI shows each model's run."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import ModelName, Settings
from cxr.core.runs import Run
from cxr.data.dataset import Arrays
from cxr.train.devices import compute_devices
from cxr.train.reporting import plot_training_curves
from cxr.train.training import TrainedModel, train_model
from tasks.artifacts import publish_image


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
    took go in ``metrics.json`` (``training_devices``; the same for every model)."""
    logger = get_run_logger()
    logger.info("training %s on %s", name, compute_devices())
    trained = train_model(
        name, arrays["train"], arrays["val"], settings, run.path("models"), baseline
    )
    run.update_json("metrics.json", training_devices=trained.devices)
    logger.info("%s trained on %s", name, trained.devices)
    curves = plot_training_curves(name, trained.history, run.path("plots", f"{name}_curves.png"))
    publish_image(f"{name}-training-curves", curves, f"run {run.run_id}: {name} loss/accuracy")
    logger.info(
        "%s: best epoch %d; %.0f s, %.1f training images/s",
        name, trained.best_epoch + 1, trained.seconds, trained.images_per_second,
    )  # fmt: skip
    return trained
