"""Load benchmark of the served model against the model's own compiled speed, in one run.

    .venv/bin/python benchmarks/load_service.py                      # pinned model (below)
    .venv/bin/python benchmarks/load_service.py --model cxr-classifier:latest --seconds 60

1. **Raw**: the packaged model through the service's compiled predict path
   (:class:`cxr.core.inference.Predictor`), in this process: batch-1 latency and the
   batch-32 rate.
2. **Served**: ``bentoml serve`` on loopback, driven by an asynchronous client (one
   process, so the load generator takes little of the CPU it shares with the server):
   1 client, then N clients with adaptive batching on, then N with it off.
3. **Scale**: the service started again with 2 HTTP front workers
   (``CXR_SERVE__FRONT_WORKERS=2``; one model runner), N clients, batching on.

Prints every figure and the ratios: served / raw rate at N clients, batching on / off,
p50 at 1 client / raw batch-1 latency, 2 front workers / 1 at N clients. Exits 1 when a
request failed or an answered request is missing from the prediction log. Without
``--model`` it packages the pinned benchmark model: a ResNet50-LSTM at 64 px with random
weights (speed does not depend on the weights) under the name ``cxr-bench``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import psutil
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cxr.core.inference import Predictor  # noqa: E402
from cxr.core.model_store import load_model, save_model  # noqa: E402
from cxr.serve.prediction_log import count_rows, create_log_engine  # noqa: E402
from cxr.serve.server_process import start_server  # noqa: E402

app = typer.Typer()
RAW_BATCH = 32


def pinned_model(image_size: int = 64) -> str:
    """Package the benchmark model (random-init ResNet50-LSTM) and return its tag."""
    from cxr.core.config import load_settings
    from cxr.train.models import build_model
    from cxr.train.packaging import serving_info

    settings = load_settings("demo", overrides={"preprocess.image_size": image_size}, environ={})
    model = build_model("resnet50_lstm", image_size, settings.model, settings.train)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.keras"
        model.save(checkpoint)
        return save_model("cxr-bench", checkpoint, serving_info(settings), {"benchmark": True})


def raw_speed(tag: str, repeats: int = 30) -> dict[str, float]:
    """Batch-1 latency (median ms) and batch-32 rate (images/s) of the compiled path."""
    packaged = load_model(tag)
    predict = Predictor(packaged.model, RAW_BATCH)
    predict.warm_up(packaged.image_size)
    size = packaged.image_size
    one = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    full = np.random.default_rng(1).random((RAW_BATCH, size, size, 3), dtype=np.float32)
    single = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(one)
        single.append(time.perf_counter() - started)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        predict(full)
    rate = repeats * RAW_BATCH / (time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu) * 1000 / (repeats * RAW_BATCH)
    return {
        "batch1_ms": round(float(np.median(single)) * 1000, 2),
        "batch32_img_s": round(rate, 1),
        "batch32_cpu_ms_per_image": round(cpu_ms, 2),
    }


def _batches(url: str) -> tuple[float, float]:
    """(batches, requests in them) of the model so far, from BentoML's
    ``bentoml_service_adaptive_batch_size`` histogram at ``/metrics``."""
    count = total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("bentoml_service_adaptive_batch_size_count"):
            count += float(line.split()[-1])
        elif line.startswith("bentoml_service_adaptive_batch_size_sum"):
            total += float(line.split()[-1])
    return count, total


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants."""
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


async def _drive(
    url: str, images: list[bytes], clients: int, seconds: float, server_pid: int
) -> dict:
    """``clients`` concurrent request loops, each sending images back to back; the
    server's CPU time per answered request is measured too (on a shared machine it
    varies less than the rate)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        stop_at = time.perf_counter() + seconds

        async def loop(index: int) -> None:
            i = index
            while time.perf_counter() < stop_at:
                data, i = images[i % len(images)], i + clients
                started = time.perf_counter()
                try:
                    response = await http.post("/predict", files={"image": ("x.png", data)})
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                if status == "200":
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[status] = errors.get(status, 0) + 1

        started, cpu = time.perf_counter(), time.process_time()
        server_cpu = _tree_cpu_s(server_pid)
        await asyncio.gather(*(loop(i) for i in range(clients)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        server_cpu = _tree_cpu_s(server_pid) - server_cpu
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "clients": clients,
        "answered": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "client_cpu_share": round(cpu / wall, 2),  # of one core, taken from the server
        "server_cpu_ms_per_request": round(server_cpu * 1000 / max(len(latencies), 1), 2),
        "client_cpu_ms_per_request": round(cpu * 1000 / max(len(latencies), 1), 2),
    }


def served(
    tag: str,
    images: list[bytes],
    batching: bool,
    runs: list[tuple[int, float]],
    front_workers: int = 1,
) -> list:
    """Start the service once (``front_workers`` HTTP processes, one model runner) and
    drive it with each (clients, seconds) in turn."""
    results = []
    with tempfile.TemporaryDirectory() as folder:
        log_url = f"sqlite:///{folder}/predictions.db"
        env = {
            "CXR_SERVE__MODEL_TAG": tag,
            "CXR_SERVE__BATCHING": str(batching).lower(),
            "CXR_SERVE__PREDICTION_LOG_URL": log_url,
            "CXR_SERVE__FRONT_WORKERS": str(front_workers),
        }
        server = start_server(env)
        try:
            for _ in range(3):  # first requests open connections and caches
                httpx.post(f"{server.url}/predict", files={"image": ("w.png", images[0])})
            engine = create_log_engine(log_url)
            for clients, seconds in runs:
                before, batches = count_rows(engine)["predictions"], _batches(server.url)
                result = asyncio.run(
                    _drive(server.url, images, clients, seconds, server.process.pid)
                )
                result["logged_rows"] = count_rows(engine)["predictions"] - before
                count, total = (b - a for a, b in zip(batches, _batches(server.url), strict=True))
                result["mean_batch"] = round(total / count, 1) if count else None
                result["batching"], result["front_workers"] = batching, front_workers
                typer.echo(json.dumps(result))
                results.append(result)
        finally:
            server.stop()
    return results


@app.command()
def main(
    model: Annotated[
        str | None, typer.Option(help="packaged model tag (default: the pinned model)")
    ] = None,
    images: Annotated[Path, typer.Option(help="folder searched for *.png")] = Path(
        "../shared/data/COVID-19_Radiography_Dataset"
    ),
    clients: Annotated[int, typer.Option()] = 16,
    seconds: Annotated[float, typer.Option(help="per measurement")] = 30,
    limit: Annotated[int, typer.Option(help="distinct images to cycle through")] = 200,
    quick: Annotated[
        bool, typer.Option(help="only 1 and N clients, batching on (no off / 2-front runs)")
    ] = False,
    isa: Annotated[
        str | None,
        typer.Option(help="ONEDNN_MAX_CPU_ISA for the raw and the served model, e.g. AVX2"),
    ] = None,
) -> None:
    """Measure raw and served speed; print the figures and their ratios."""
    if isa:  # read by oneDNN when TensorFlow starts: here and in the server's processes
        os.environ["ONEDNN_MAX_CPU_ISA"] = isa
    payloads = [p.read_bytes() for p in sorted(images.rglob("*.png"))[:limit]]
    if not payloads:
        raise typer.BadParameter(f"no PNG images under {images}")
    tag = model or pinned_model()
    raw = raw_speed(tag)
    typer.echo(f"raw {tag}: {json.dumps(raw)}")
    one, many_on = served(tag, payloads, True, [(1, seconds), (clients, seconds)])
    rate = raw["batch32_img_s"]
    ratios = {
        f"served_{clients}_clients / raw_batch32": round(many_on["requests_per_s"] / rate, 3),
        "p50_1_client / raw_batch1": round(one["p50_ms"] / raw["batch1_ms"], 2),
        # CPU per image, raw / served (server + client): what served / raw would be on a
        # machine the benchmark had to itself, CPU-bound (sharing moves it less than rates)
        "cpu_raw_per_image / cpu_served_per_request": round(
            raw["batch32_cpu_ms_per_image"]
            / (many_on["server_cpu_ms_per_request"] + many_on["client_cpu_ms_per_request"]),
            3,
        ),
    }
    results = [one, many_on]
    if not quick:
        (many_off,) = served(tag, payloads, False, [(clients, seconds)])
        (two_fronts,) = served(tag, payloads, True, [(clients, seconds)], front_workers=2)
        on, off, two = (r["requests_per_s"] for r in (many_on, many_off, two_fronts))
        ratios |= {
            "batching_on / off": round(on / off, 2),
            "front_workers_2 / 1": round(two / on, 2),
        }
        results += [many_off, two_fronts]
    typer.echo(f"ratios: {json.dumps(ratios)}")
    for result in results:
        if result["errors"] or result["logged_rows"] != result["answered"]:
            typer.echo(f"FAIL: errors or unlogged answers in {result}", err=True)
            raise typer.Exit(1)


if __name__ == "__main__":
    app()
