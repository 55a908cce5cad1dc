"""The ``cxr`` command line: demo-data, holdout, train, evaluate, explain, serve, promote,
rollback, models, monitor, monitor-ui, deploy."""

from __future__ import annotations

from cxr.environment import apply_defaults

apply_defaults()  # before Prefect, TensorFlow or BentoML is imported

import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402

from cxr.core.errors import (  # noqa: E402
    MONITOR_STATUS_EXIT,
    ConfigError,
    PipelineError,
    exit_codes_text,
)

app = typer.Typer(
    help="Chest X-ray COVID-19 classifier: train, gate, package, serve, monitor.\n\n"
    "Exit codes:\n\n" + exit_codes_text().replace("\n", "\n\n"),
)
DEMO_DIR = Path("data/demo")
RETRAIN_ON_DRIFT_MOVED = (
    "--trigger-retraining was removed: retraining on drift is the retraining deployment's "
    "Prefect trigger on the cxr.drift.detected event (emitted when a drift episode starts); "
    "enable it with `cxr deploy --retrain-on-drift`"
)


def _fail(error: PipelineError) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(int(error.exit_code))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="folder to write the synthetic dataset into")],
    per_class: Annotated[int, typer.Option(help="images per class")] = 300,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Write SYNTHETIC chest-like phantoms in the release layout (not real X-rays)."""
    from cxr.data.demo_data import SYNTHETIC_NOTICE, write_demo_dataset

    root = write_demo_dataset(out, per_class=per_class, seed=seed)
    typer.echo(f"{SYNTHETIC_NOTICE}\nwrote {2 * per_class} images to {root}")


@app.command()
def holdout(
    data_dir: Annotated[Path, typer.Option(help="dataset folder (release or plain layout)")],
    out: Annotated[Path, typer.Option(help="new folder for the pool/ and unseen/ link trees")],
    per_class: Annotated[int, typer.Option(help="unseen images per class")] = 200,
    seed: Annotated[int, typer.Option()] = 2026,
) -> None:
    """Set real images aside before any run: train on OUT/pool, evaluate on OUT/unseen."""
    from cxr.core.config import load_settings
    from cxr.data.holdout import make_holdout

    settings = load_settings()
    try:
        summary = make_holdout(
            data_dir, out, per_class, seed, settings.data.classes,
            settings.preprocess.near_duplicate_distance,
        )  # fmt: skip
    except PipelineError as error:
        _fail(error)
    typer.echo(json.dumps(summary, indent=2))


def _demo_dataset() -> Path:
    """The synthetic demo dataset in ``<repo>/data/demo``, written on first use."""
    from cxr.core.config import REPO_ROOT
    from cxr.data.demo_data import DATASET_DIRNAME, write_demo_dataset

    root = REPO_ROOT / DEMO_DIR / DATASET_DIRNAME
    if not root.is_dir():
        write_demo_dataset(REPO_ROOT / DEMO_DIR)
    return root


def _check_train_inputs(
    data_dir: Path,
    profile: str | None,
    config: Path | None,
    overrides: dict[str, Any],
    run_id: str | None,
) -> None:
    """The checks the flow makes first, made before Prefect and TensorFlow start, so a
    bad argument is answered in a second (the flow still makes them, for deployments)."""
    from cxr.core.config import load_settings
    from cxr.core.runs import check_run_id
    from cxr.data.ingestion import resolve_dataset_root

    settings = load_settings(profile, config, overrides)
    resolve_dataset_root(data_dir)
    if run_id is not None:
        check_run_id(settings.runs_dir, run_id)


def _overrides(**options: Any) -> dict[str, Any]:
    """CLI options -> dotted config overrides (unset options are left out)."""
    return {key: value for key, value in options.items() if value is not None}


@app.command()
def train(
    data_dir: Annotated[
        Path | None, typer.Option(help="dataset folder; default: synthetic demo data")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="built-in profile (default: paper, or demo without data)")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    samples_per_class: Annotated[int | None, typer.Option()] = None,
    image_size: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    models: Annotated[list[str] | None, typer.Option("--model", help="repeatable")] = None,
    weights: Annotated[
        str | None, typer.Option(help="ResNet50 weights: imagenet | FILE | none")
    ] = None,
    gate_min_score: Annotated[
        float | None, typer.Option(help="the gate's minimum test score (default 0.95)")
    ] = None,
    runs_dir: Annotated[Path | None, typer.Option()] = None,
    run_id: Annotated[
        str | None, typer.Option(help="name of the run folder (default: time)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="any setting, e.g. model.dropout=0.3")
    ] = None,
    task_runner: Annotated[
        str | None, typer.Option(help="local (default) | dask: shards and models on workers")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option(help="Dask scheduler, tcp://host:8786 (default: local cluster)")
    ] = None,
    dask_workers: Annotated[
        int | None, typer.Option(help="worker processes of the local Dask cluster (default 2)")
    ] = None,
) -> None:
    """Run the training flow: validate, train 3 models, evaluate, gate, package."""
    if data_dir is None:
        data_dir, profile = _demo_dataset(), profile or "demo"
        typer.secho(f"no --data-dir: using SYNTHETIC demo data in {data_dir}", fg="yellow")
    overrides = _overrides(
        **{
            "train.epochs": epochs,
            "data.samples_per_class": samples_per_class,
            "preprocess.image_size": image_size,
            "preprocess.batch_size": batch_size,
            "train.learning_rate": learning_rate,
            "train.seed": seed,
            "train.models": models,
            "model.backbone_weights": weights,
            "gate.min_score": gate_min_score,
            "runs_dir": str(runs_dir) if runs_dir else None,
            "runner.task_runner": task_runner,
            "runner.dask_address": dask_address,
            "runner.dask_workers": dask_workers,
        }
    )
    from cxr.core.config import parse_assignments

    try:
        overrides |= parse_assignments(set_ or [])
        _check_train_inputs(data_dir, profile, config, overrides, run_id)
    except PipelineError as error:
        _fail(error)

    from cxr.run_states import flow_in_this_process, timed_out
    from flows.training import run_training_flow

    try:
        with flow_in_this_process():  # Ctrl-C / SIGTERM: the run ends Crashed, exit 130 / 143
            result = run_training_flow(
                data_dir=str(data_dir),
                profile=profile,
                config_file=str(config) if config else None,
                overrides=overrides,
                run_id=run_id,
            )
    except TimeoutError as error:  # a task ran past its timeouts.* setting
        _fail(timed_out(error))
    except PipelineError as error:
        _fail(error)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Option(help="BentoML model tag (cxr-classifier:latest) or a run's .keras file")
    ],
    data_dir: Annotated[Path, typer.Option(help="dataset folder (release or plain layout)")],
    samples_per_class: Annotated[int | None, typer.Option(help="default: all images")] = None,
    seed: Annotated[int, typer.Option()] = 42,
    predictions: Annotated[
        Path | None,
        typer.Option(help="also write each image's probability and OOD check to this CSV"),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Evaluate a packaged model on any dataset and print the metrics as JSON."""
    from cxr.train.evaluation import evaluate_packaged

    try:
        metrics = evaluate_packaged(model, data_dir, samples_per_class, seed, predictions)
    except PipelineError as error:
        _fail(error)
    text = json.dumps(metrics, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    typer.echo(text)


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="a PNG, JPEG or DICOM chest X-ray")],
    model: Annotated[
        str | None,
        typer.Option(help="model tag or a run's .keras file (default: CXR_SERVE__MODEL_TAG)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="PNG to write (default: ./<image>_explanation.png)")
    ] = None,
) -> None:
    """Write an occlusion heat map of what drove the model's score, over the model input
    (65 forward passes); print the answer it explains, as the service's /predict."""
    from cxr.core.calibration import calibrate
    from cxr.core.config import load_settings
    from cxr.core.errors import DataInputError
    from cxr.core.explain import heat_from_probabilities, occluded_inputs, overlay_png
    from cxr.core.inference import Predictor
    from cxr.core.model_store import load_any
    from cxr.core.ood import OUT_OF_DISTRIBUTION, as_answer, verdicts
    from cxr.core.preprocessing import ImageDecodeError, decode_image, to_model_input

    out = out or Path(f"{image.stem}_explanation.png")
    try:
        if not image.is_file():
            raise DataInputError(f"image not found: {image}")
        try:
            decoded = decode_image(image.read_bytes())
        except ImageDecodeError as error:
            raise DataInputError(f"{image}: {error}; give a PNG, JPEG or DICOM file") from error
        packaged = load_any(model or load_settings().serve.model_tag)
    except PipelineError as error:
        _fail(error)
    x = to_model_input(decoded.gray, packaged.image_size)
    detector = packaged.detector
    predict = Predictor(packaged.model, 32, detector.layers if detector else ())
    probabilities, features = predict.outputs(occluded_inputs(x))
    calibrated = calibrate(probabilities, packaged.temperature)  # as /predict answers
    explanation = heat_from_probabilities(calibrated, x.shape[0], packaged.cutoff)
    scores, flags = verdicts(
        detector, None if features is None else features[:1], 1, decoded.colour
    )
    in_distribution = None if as_answer(flags[0]) is None else bool(flags[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(overlay_png(x, explanation))
    verdict = packaged.classes[int(explanation.predicted_covid)]
    answer = {
        "image": str(image),
        "model": packaged.tag,
        "covid_probability": explanation.covid_probability,
        "label": OUT_OF_DISTRIBUTION if in_distribution is False else verdict,
        "in_distribution": in_distribution,
        "ood_score": as_answer(scores[0]),
        "threshold": packaged.cutoff,
        "border_heat_share": explanation.border_share,
        "forward_passes": explanation.passes,
        "out": str(out),
    }
    typer.echo(json.dumps(answer, indent=2))


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(help="model tag (default: CXR_SERVE__MODEL_TAG or cxr-classifier:production)"),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="address to listen on (default: BENTOML_HOST, else 127.0.0.1 without an API "
            "token, 0.0.0.0 with CXR_SERVE__API_TOKEN set)"
        ),
    ] = None,
    port: Annotated[int, typer.Option()] = 3000,
    batching: Annotated[bool | None, typer.Option(help="adaptive batching")] = None,
    log_url: Annotated[str | None, typer.Option(help="prediction log SQLAlchemy URL")] = None,
) -> None:
    """Serve a packaged model with ``bentoml serve`` (Ctrl-C or a SIGTERM stops it)."""
    import sys

    from cxr.core.config import REPO_ROOT, load_settings
    from cxr.core.model_store import get_stored
    from cxr.serve.http_guards import default_host

    env = dict(os.environ)
    for key, value in {
        "MODEL_TAG": model,
        "BATCHING": batching,
        "PREDICTION_LOG_URL": log_url,
    }.items():
        if value is not None:
            env[f"CXR_SERVE__{key}"] = str(value).lower() if isinstance(value, bool) else value
    try:
        settings = load_settings(environ=env).serve
        served = str(get_stored(settings.model_tag).tag)  # name:production resolved now
    except PipelineError as error:
        _fail(error)
    env["CXR_SERVE__MODEL_TAG"] = served  # the service serves what is printed here
    command = [sys.executable, "-m", "bentoml", "serve", "service:XRayClassifier"]
    command += ["--port", str(port)] + ([] if host is None else ["--host", host])
    bound = host or env.get("BENTOML_HOST") or default_host(settings.api_token)
    access = "open: no CXR_SERVE__API_TOKEN" if settings.api_token is None else "token required"
    asked = "" if served == settings.model_tag else f" ({settings.model_tag})"
    typer.echo(f"serving {served}{asked} on http://{bound}:{port} ({access}; docs at /docs)")
    sys.stdout.flush()
    # this process becomes `bentoml serve`: a SIGTERM to it (a supervisor, `kill PID`)
    # reaches BentoML's own arbiter, which stops its workers; a parent waiting on it would
    # die alone and leave the service running, holding the port
    os.chdir(REPO_ROOT)
    os.execve(sys.executable, command, env)


@app.command()
def promote(
    tag: Annotated[str, typer.Argument(help="model to put in production, e.g. cxr-classifier:v3")],
    reason: Annotated[str, typer.Option(help="why, for the record")] = "promoted by hand",
) -> None:
    """Make a packaged model the production model (what `cxr serve` serves by default
    from its next start); recorded with its data fingerprint, code version and metrics."""
    from cxr.train.promotion import promote as promote_tag

    try:
        entry = promote_tag(tag, "cxr promote", reason)
    except PipelineError as error:
        _fail(error)
    typer.echo(json.dumps(entry, indent=2))
    typer.echo("restart `cxr serve` / `bentoml serve` for a running service to serve it", err=True)


@app.command()
def rollback(
    name: Annotated[str, typer.Option(help="model name")] = "cxr-classifier",
    reason: Annotated[str, typer.Option(help="why, for the record")] = "rolled back by hand",
) -> None:
    """Put the previous production model back in production."""
    from cxr.train.promotion import rollback as roll_back

    try:
        entry = roll_back(name, "cxr rollback", reason)
    except PipelineError as error:
        _fail(error)
    typer.echo(json.dumps(entry, indent=2))
    typer.echo("restart `cxr serve` / `bentoml serve` for a running service to serve it", err=True)


@app.command()
def models(
    name: Annotated[str, typer.Option(help="model name")] = "cxr-classifier",
) -> None:
    """The production model and the promotion record (JSON)."""
    from cxr.core.production import production_tag, read_record, record_path

    try:
        found = {
            "production": production_tag(name),
            "record": str(record_path(name)),
            "promotions": read_record(name),
        }
    except PipelineError as error:
        _fail(error)
    typer.echo(json.dumps(found, indent=2))


@app.command()
def monitor(
    window_minutes: Annotated[int | None, typer.Option(help="default from config: 60")] = None,
    min_predictions: Annotated[int | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="default: CXR_SERVE__MODEL_TAG")] = None,
    log_url: Annotated[str | None, typer.Option(help="prediction log SQLAlchemy URL")] = None,
    alert_block: Annotated[
        str | None, typer.Option(help="saved notification block (see `cxr alert-block`)")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="one-off alert receiver URL, for a terminal run")
    ] = None,
    trigger_retraining: Annotated[
        bool | None, typer.Option(hidden=True, help="removed: see `cxr deploy --retrain-on-drift`")
    ] = None,
) -> None:
    """Run the monitoring flow once (exit codes: see ``cxr --help``). A drift episode's
    start emits the Prefect event cxr.drift.detected, which retrains through the
    retraining deployment's trigger where `cxr deploy --retrain-on-drift` enabled it."""
    import os

    from flows.monitoring import monitoring_flow

    if trigger_retraining is not None:
        _fail(ConfigError(RETRAIN_ON_DRIFT_MOVED))
    if webhook_url:  # a setting, not a flow parameter: parameters are stored by Prefect
        os.environ["CXR_MONITOR__WEBHOOK_URL"] = webhook_url
    from cxr.run_states import flow_in_this_process

    try:
        with flow_in_this_process():  # Ctrl-C / SIGTERM: the run ends Crashed, exit 130 / 143
            result = monitoring_flow(
                window_minutes=window_minutes,
                min_predictions=min_predictions,
                model_tag=model,
                log_url=log_url,
                alert_block=alert_block,
            )
    except PipelineError as error:
        _fail(error)
    typer.echo(json.dumps(result, indent=2, default=str))
    raise typer.Exit(int(MONITOR_STATUS_EXIT[result["status"]]))


@app.command("monitor-ui")
def monitor_ui(
    host: Annotated[
        str, typer.Option(help="address to listen on (the UI has no login: keep it loopback)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workspace: Annotated[
        Path | None, typer.Option(help="Evidently workspace (default: monitor.workspace_dir)")
    ] = None,
) -> None:
    """Evidently's UI on the monitoring workspace: a project per model with its dashboard
    of drift over time and every window's report (Ctrl-C stops it)."""
    from cxr.core.config import load_settings
    from cxr.core.errors import DataInputError

    folder = (workspace or load_settings().monitor.workspace_dir).resolve()
    if not folder.is_dir():
        _fail(
            DataInputError(
                f"no Evidently workspace at {folder}: run `cxr monitor` (or the monitoring "
                "deployment) first, or pass --workspace"
            )
        )
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's telemetry
    from evidently.ui.service.app import get_config, run

    typer.echo(f"Evidently UI on http://{host}:{port} (workspace {folder})")
    run(get_config(host=host, port=port, workspace=str(folder)))


@app.command()
def deploy(
    data_dir: Annotated[
        Path | None, typer.Option(help="dataset of the scheduled retraining (default: demo)")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="retraining profile (default: paper, demo without data)")
    ] = None,
    alert_block: Annotated[
        str | None, typer.Option(help="notification block of the drift alerts (its name)")
    ] = None,
    pool: Annotated[str, typer.Option(help="process work pool")] = "cxr-local",
    config: Annotated[
        Path | None, typer.Option(help="YAML settings file both deployments' runs read")
    ] = None,
    retrain_on_drift: Annotated[
        bool,
        typer.Option(
            help="enable the retraining deployment's trigger on the cxr.drift.detected event "
            "(one retraining at a time: a run that would start beside another is cancelled)"
        ),
    ] = False,
) -> None:
    """Register the retraining and monitoring deployments (deploy/prefect.yaml) with the
    Prefect server in PREFECT_API_URL, the retraining's drift trigger and its concurrency
    limit of one included."""
    import subprocess
    import sys

    from cxr.core.config import REPO_ROOT, available_profiles, load_settings

    if data_dir is None:
        data_dir, profile = _demo_dataset(), profile or "demo"
    profile = profile or "paper"
    if profile not in available_profiles():
        _fail(ConfigError(f"unknown profile {profile!r}; choose from {available_profiles()}"))
    try:
        model_name = load_settings(profile, config).packaging.model_name  # checks the file
    except PipelineError as error:
        _fail(error)
    config_file = {"config_file": str(config.resolve())} if config else {}
    prefect = [sys.executable, "-m", "prefect"]
    params = {
        "scheduled-retraining": {"data_dir": str(data_dir.resolve()), "profile": profile},
        "drift-monitoring": {"alert_block": alert_block} if alert_block else {},
    }
    commands = [[*prefect, "work-pool", "create", "--type", "process", pool, "--overwrite"]]
    for name, values in params.items():
        command = [*prefect, "--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml"]
        command += ["--name", name, "--pool", pool]
        if values | config_file:
            command += ["--params", json.dumps(values | config_file)]
        if name == "scheduled-retraining":
            command += ["--trigger", json.dumps(_drift_trigger(model_name, retrain_on_drift))]
        commands.append(command)
    for command in commands:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            _fail(PipelineError(f"{' '.join(command[2:])} failed:\n{done.stderr[-2000:]}"))
    from cxr.run_states import save_lost_heartbeat_automation

    lost = save_lost_heartbeat_automation()  # a run whose process died silently: Crashed
    trigger = "on" if retrain_on_drift else "off (--retrain-on-drift turns it on)"
    typer.echo(f"registered {', '.join(params)} on work pool {pool}")
    typer.echo(f"saved automation {lost.name!r} (after {lost.trigger.within} without one)")
    typer.echo(f"retraining on drift: {trigger}; one retraining at a time")
    typer.echo(f"start a worker with:\n  prefect worker start --pool {pool}")


def _drift_trigger(model_name: str, enabled: bool) -> dict[str, Any]:
    """The retraining deployment's trigger as deploy/prefect.yaml writes it, switched on
    or off and matching the drift events of ``model_name``'s models."""
    import yaml

    from cxr.core.config import REPO_ROOT

    spec = yaml.safe_load((REPO_ROOT / "deploy" / "prefect.yaml").read_text())
    retraining = next(d for d in spec["deployments"] if d["name"] == "scheduled-retraining")
    (trigger,) = retraining["triggers"]
    match = {"prefect.resource.id": f"cxr.model.{model_name}:*"}
    return {**trigger, "enabled": enabled, "match": match}


alert_block_app = typer.Typer(help="Prefect notification blocks for the drift alerts.")
app.add_typer(alert_block_app, name="alert-block")


@alert_block_app.command("create")
def alert_block_create(
    name: Annotated[str, typer.Argument(help="block name, for --alert-block")],
    url: Annotated[
        str, typer.Option(help="webhook receiving the JSON alerts", prompt=True, hide_input=True)
    ],
    overwrite: Annotated[bool, typer.Option(help="replace a block of this name")] = False,
) -> None:
    """Save a Custom Webhook notification block on the Prefect server in PREFECT_API_URL;
    the URL is kept in the block's secrets. Slack, Teams and e-mail blocks can be made in
    the Prefect UI instead and passed as ``--alert-block slack-webhook/NAME``."""
    from cxr.monitor.alerts import webhook_block

    try:
        webhook_block(url, name).save(name, overwrite=overwrite)
    except ValueError as error:
        _fail(ConfigError(f"could not save block {name!r}: {error} (use --overwrite?)"))
    typer.echo(f"saved notification block custom-webhook/{name}; use --alert-block {name}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
