import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True, scope="session")
def _data_root(tmp_path_factory):
    """Generated data (MNIST-1D) is cached in a per-session folder, never in the user's home."""
    os.environ["SKETCHPRUNE_DATA"] = str(tmp_path_factory.mktemp("data"))
    yield


@pytest.fixture
def scratch_registry():
    """Methods registered inside a test are removed afterwards."""
    from sketchprune.methods import registry

    before = dict(registry._METHODS)
    yield
    registry._METHODS.clear()
    registry._METHODS.update(before)
