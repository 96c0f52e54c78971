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


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test (alignment runs many small FFTs and solves: on 2 shared
    cores a thread pool only spins), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
