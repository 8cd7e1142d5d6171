from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators.default import DigitsResNet


@pytest.fixture(autouse=True)
def latency_database(tmp_path, monkeypatch):
    """Every test gets its own latency database (subprocesses inherit it), never the user's."""
    path = tmp_path / "latency.sqlite"
    monkeypatch.setenv("HILAS_LATENCY_DB", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_resnet():
    """An untrained copy of the default architecture with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = DigitsResNet(widths=(8, 16))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.fixture
def example():
    return torch.zeros(1, 1, 8, 8)


@pytest.fixture
def inputs():
    return torch.from_numpy(np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32))


@pytest.fixture(autouse=True)
def device_registry(tmp_path, monkeypatch):
    """Every test gets its own device registry (subprocesses inherit it), never the user's."""
    path = tmp_path / "devices.toml"
    monkeypatch.setenv("HILAS_DEVICES", str(path))
    return path
