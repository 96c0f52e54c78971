import os

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture(params=_DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one CPU thread for a test module (alignment runs many small reconstructions: on 2
    shared cores a thread pool only spins), restored afterwards. Module-scoped, so module fixtures
    that request it run on one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
