import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras
    keras.utils.set_random_seed(1234)
    yield


def randomize(model, seed=0, scale=0.5, bias_scale=0.1):
    """Give every weight (biases too) random values, so rules that differ on biases differ here."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, scale if w.ndim > 1 else bias_scale, w.shape).astype("float32")
                       for w in model.get_weights()])
    return model
