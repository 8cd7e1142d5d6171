from pathlib import Path

import numpy as np
import pytest
import torch

from hilas.evaluators.default import DigitsResNet


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


# Short rounds: the measurement protocol is not under test where these runs are used.
FAST_MEASUREMENT = {"warmup_runs": 2, "warmup_seconds": 0.01, "min_samples": 10, "min_seconds": 0.02,
                    "cooldown_seconds": 0.0, "noise_threshold": 1.0}
SIMULATED_DEVICES = {"sim": {"kind": "virtual", "seed": 1},
                     "sim-fast": {"kind": "virtual", "seed": 1, "ms_per_mflop": 0.01}}


@pytest.fixture(scope="session")
def default_cache(tmp_path_factory) -> Path:
    """Where the default model is trained, once per session (test_search_e2e trains it in the same place)."""
    return tmp_path_factory.getbasetemp() / "cache"


@pytest.fixture
def trained_default(default_cache, monkeypatch) -> Path:
    monkeypatch.setenv("HILAS_CACHE_DIR", str(default_cache))
    return default_cache


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory, default_cache) -> tuple[Path, Path]:
    """Two small finished runs (search seeds 1 and 2) on two simulated devices, made once per session."""
    from hilas.search import RunConfig
    from hilas.search.runs import start_run

    root = tmp_path_factory.mktemp("finished-runs")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HILAS_CACHE_DIR", str(default_cache))
        env.setenv("HILAS_LATENCY_DB", str(root / "latency.sqlite"))
        env.setenv("HILAS_DEVICES", str(root / "devices.toml"))
        for seed in (1, 2):
            start_run(RunConfig(budget=16, population=8, seed=seed, devices=tuple(SIMULATED_DEVICES),
                                device_definitions=SIMULATED_DEVICES, measurement=FAST_MEASUREMENT),
                      root / f"seed-{seed}")
    return root / "seed-1", root / "seed-2"


# A test that uses one of these (a finished search, the trained default) is slow whatever its own marks say.
SLOW_FIXTURES = {"finished_runs", "trained_default", "default_cache"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
