"""Training speed of the ResNet50 baseline: float32 against mixed bfloat16, same process.

Prints training images per second for each image size and precision, and the ratio of
bfloat16 to float32 (the baseline run in the same process). Whether bfloat16 pays off
depends on the CPU: with AVX512-BF16 or AMX it about halves the time from 96 px up;
without them it is emulated and far slower. ``train.mixed_precision: auto`` decides by
the CPU's flags; this script checks that decision on the machine at hand.

    .venv/bin/python -m research.train_speed --sizes 96 --sizes 128 --steps 6
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
import typer

from cxr.core.config import load_settings
from cxr.train.devices import cpu_has_native_bfloat16
from cxr.train.models import build_model

app = typer.Typer(add_completion=False)


def images_per_second(image_size: int, mixed: bool, steps: int, batch: int) -> float:
    """Train the ResNet50 baseline for ``steps`` batches after one warm-up batch."""
    settings = load_settings(
        "recipe", overrides={"train.mixed_precision": mixed, "preprocess.image_size": image_size}
    )
    model = build_model("resnet50", image_size, settings.model, settings.train, steps + 1)
    rng = np.random.default_rng(0)
    x = rng.random((batch, image_size, image_size, 3), dtype=np.float32)
    y = rng.integers(0, 2, batch).astype(np.float32)
    model.train_on_batch(x, y)  # graph tracing and compilation
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - started)


@app.command()
def main(
    sizes: Annotated[list[int], typer.Option(help="image sizes to time")] = [96, 128],  # noqa: B006
    steps: Annotated[int, typer.Option(help="timed batches per setting")] = 6,
    batch: Annotated[int, typer.Option(help="images per batch")] = 32,
) -> None:
    """Print a table of images/s and the bfloat16 : float32 ratio per image size."""
    typer.echo(f"CPU has native bfloat16 (AVX512-BF16 or AMX): {cpu_has_native_bfloat16()}")
    typer.echo("| image size | float32 img/s | bfloat16 img/s | bfloat16 / float32 |")
    typer.echo("|---|---|---|---|")
    for size in sizes:
        full = images_per_second(size, False, steps, batch)
        mixed = images_per_second(size, True, steps, batch)
        typer.echo(f"| {size} | {full:.1f} | {mixed:.1f} | {mixed / full:.2f} |")


if __name__ == "__main__":
    app()
