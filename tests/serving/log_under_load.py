"""The prediction log's guarantees under load, shared by the SQLite and PostgreSQL tests."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from cxr.serve.prediction_log import count_rows, create_log_engine
from cxr.serve.server_process import ServerProcess
from tests.conftest import real_images


def _predict(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/predict", files={"image": ("x.png", data, "application/octet-stream")})


def check_no_row_lost_then_kill(client: httpx.Client, log_url: str, running: ServerProcess) -> None:
    """64 requests from 16 clients give 64 rows; then a kill -9 in the middle of a load:
    every answered request has its row, and at most the requests in flight (committed,
    answer not yet sent) add rows beyond them. Stops ``running``."""
    log = create_log_engine(log_url)
    before = count_rows(log)["predictions"]
    images = [p.read_bytes() for p in real_images("COVID", 8, offset=400)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda i: _predict(client, images[i % 8]).status_code, range(64)))
    assert codes == [200] * 64
    assert count_rows(log)["predictions"] - before == 64

    before = count_rows(log)["predictions"]
    answered, stop = [], threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            try:
                if _predict(client, images[i % 8]).status_code == 200:
                    answered.append(1)
            except httpx.HTTPError:
                return

    threads = [threading.Thread(target=load, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    running.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    log.dispose()  # connections of the killed workers are gone; count on fresh ones
    logged = count_rows(create_log_engine(log_url))["predictions"] - before
    assert len(answered) > 0 and len(answered) <= logged <= len(answered) + 16
