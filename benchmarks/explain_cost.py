"""What one occlusion explanation costs against one prediction, through the compiled path.

    .venv/bin/python benchmarks/explain_cost.py                 # ResNet50-LSTM at 224 px
    .venv/bin/python benchmarks/explain_cost.py --image-size 64 --model lstm

Builds the model with random weights (speed does not depend on the weights), compiles
the :class:`cxr.core.inference.Predictor` sizes, then times the median of a batch-1
prediction and of :func:`cxr.core.explain.explain` (65 forward passes in batches of 32)
plus the PNG overlay; prints both and their ratio.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cxr.core.explain import explain, overlay_png, passes  # noqa: E402
from cxr.core.inference import Predictor  # noqa: E402

app = typer.Typer()


def _median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


@app.command()
def main(
    image_size: Annotated[int, typer.Option()] = 224,
    model: Annotated[str, typer.Option(help="resnet50_lstm | resnet50 | lstm")] = "resnet50_lstm",
    repeats: Annotated[int, typer.Option()] = 3,
) -> None:
    """Print the batch-1 prediction time, the explanation time and their ratio."""
    from cxr.core.config import load_settings
    from cxr.train.models import build_model

    settings = load_settings("demo", overrides={"preprocess.image_size": image_size}, environ={})
    keras_model = build_model(model, image_size, settings.model, settings.train)
    predict = Predictor(keras_model, 32)
    predict.warm_up(image_size)
    x = np.random.default_rng(0).random((image_size, image_size, 3), dtype=np.float32)
    one = _median_seconds(lambda: predict(x[None]), max(5, repeats))
    explained = _median_seconds(lambda: overlay_png(x, explain(x, predict, 0.5)), repeats)
    print(
        json.dumps(
            {
                "model": model,
                "image_size": image_size,
                "forward_passes": passes(),
                "predict_batch1_s": round(one, 4),
                "explain_s": round(explained, 3),
                "explain_over_predict": round(explained / one, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    app()
