"""Compiled batch inference answers as the model does, for any number of images."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.core.config import ModelConfig, TrainConfig
from cxr.core.inference import Predictor
from cxr.train.models import build_model


@pytest.fixture(scope="module")
def hybrid():
    return build_model("resnet50_lstm", 32, ModelConfig(), TrainConfig())


@pytest.mark.parametrize("n", [1, 3, 8, 33])
def test_padded_compiled_batches_equal_the_eager_model(hybrid, n: int) -> None:
    x = np.random.default_rng(n).random((n, 32, 32, 3), dtype=np.float32)
    expected = np.asarray(hybrid(x, training=False)).reshape(-1)
    got = Predictor(hybrid, max_batch_size=32)(x)
    assert got.shape == (n,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_batch_sizes_cover_the_largest_and_nothing_else_is_needed(hybrid) -> None:
    assert Predictor(hybrid, max_batch_size=32).sizes == (1, 2, 4, 8, 16, 32)
    assert Predictor(hybrid, max_batch_size=12).sizes == (1, 2, 4, 8, 12)
    assert Predictor(hybrid).__call__(np.empty((0, 32, 32, 3), np.float32)).shape == (0,)
    with pytest.raises(ValueError, match="max_batch_size"):
        Predictor(hybrid, max_batch_size=0)
