"""Load test of the served model: N concurrent clients for a fixed time on loopback,
with adaptive batching on and off in the same run (the on/off ratio is the figure).

    .venv/bin/python benchmarks/load_service.py --model cxr-classifier:latest \
        --clients 16 --seconds 60 --images ../shared/data/COVID-19_Radiography_Dataset

Prints requests/s, p50/p95/p99 latency, errors and logged rows for each mode.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cxr.serve.prediction_log import count_rows, create_log_engine  # noqa: E402
from cxr.serve.server_process import start_server  # noqa: E402

app = typer.Typer()


def _drive(url: str, images: list[bytes], clients: int, seconds: float) -> dict[str, object]:
    """Each client sends images back to back until the time is up."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            i = index
            while time.perf_counter() < stop_at:
                data = images[i % len(images)]
                i += clients
                started = time.perf_counter()
                try:
                    status = http.post("/predict", files={"image": ("x.png", data)}).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "answered": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


@app.command()
def main(
    model: Annotated[str, typer.Option(help="packaged model tag")] = "cxr-classifier:latest",
    images: Annotated[Path, typer.Option(help="folder searched for *.png")] = Path(
        "../shared/data/COVID-19_Radiography_Dataset"
    ),
    clients: Annotated[int, typer.Option()] = 16,
    seconds: Annotated[float, typer.Option()] = 60,
    limit: Annotated[int, typer.Option(help="distinct images to cycle through")] = 200,
    server_log: Annotated[Path | None, typer.Option(help="append server output here")] = None,
) -> None:
    """Run the load with batching on, then off, and print both and their ratio."""
    payloads = [p.read_bytes() for p in sorted(images.rglob("*.png"))[:limit]]
    if not payloads:
        raise typer.BadParameter(f"no PNG images under {images}")
    results = {}
    for batching in (True, False):
        with tempfile.TemporaryDirectory() as folder:
            log_url = f"sqlite:///{folder}/predictions.db"
            server = start_server(
                {
                    "CXR_SERVE__MODEL_TAG": model,
                    "CXR_SERVE__BATCHING": str(batching).lower(),
                    "CXR_SERVE__PREDICTION_LOG_URL": log_url,
                },
                log_file=server_log,
            )
            try:
                httpx.post(f"{server.url}/predict", files={"image": ("w.png", payloads[0])})
                engine = create_log_engine(log_url)
                warm = count_rows(engine)["predictions"]
                result = _drive(server.url, payloads, clients, seconds)
                result["logged_rows"] = count_rows(engine)["predictions"] - warm
            finally:
                server.stop()
        results["batching_on" if batching else "batching_off"] = result
        typer.echo(f"batching={'on ' if batching else 'off'} {json.dumps(result)}")
    on, off = results["batching_on"], results["batching_off"]
    ratio = on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else float("nan")
    typer.echo(f"throughput ratio on/off: {ratio:.2f} ({clients} clients, {seconds:.0f} s each)")
    for name, result in results.items():
        if result["errors"] or result["logged_rows"] != result["answered"]:
            typer.echo(f"FAIL {name}: errors or logged rows != answered requests", err=True)
            raise typer.Exit(1)


if __name__ == "__main__":
    app()
