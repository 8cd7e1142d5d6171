"""The baselines a benchmark compares hilas with, as run options: random search, and a search steered by FLOPs."""

import numpy as np
import pytest

import hilas.search.loop.nsga2
from hilas.search import RunConfig, UserError
from hilas.search.config import parse_config
from hilas.search.runs import start_run
from hilas.search.setup.task import compose_space, load_task
from hilas.search.store import Store
from tests.conftest import FAST_MEASUREMENT, SIMULATED_DEVICES


def small(**kw) -> RunConfig:
    return RunConfig(budget=8, population=4, seed=3, devices=("sim",), device_definitions=SIMULATED_DEVICES,
                     measurement=FAST_MEASUREMENT, drop_recovery_steps=0, **kw)


def genomes(run) -> list[str]:
    store = Store.open(run)
    rows = [c.genome for c in sorted(store.candidates(), key=lambda c: c.candidate)]
    store.close()
    return rows


def test_random_search_is_the_baseline_then_the_spaces_own_samples(trained_default, tmp_path):
    cfg = small(algorithm="random")
    start_run(cfg, tmp_path / "run")
    task = load_task(cfg)
    space = compose_space(task.model, task.example_input, masks=True, drops=True)
    rng = np.random.default_rng(cfg.seed)
    expected = [space.repair(space.baseline())] + [space.repair(space.sample(rng)) for _ in range(7)]
    assert genomes(tmp_path / "run") == ["".join(str(int(v)) for v in g) for g in expected]


def test_a_flops_search_steers_by_the_stored_flops(trained_default, tmp_path, monkeypatch):
    told = []
    original = hilas.search.loop.nsga2.Nsga2.tell
    monkeypatch.setattr(hilas.search.loop.nsga2.Nsga2, "tell",
                        lambda self, F, G: (told.append(F), original(self, F, G)))
    start_run(small(objective="flops"), tmp_path / "run")
    store = Store.open(tmp_path / "run")
    rows = sorted(store.candidates(), key=lambda c: c.candidate)
    flops = [store.structure(c.structure_key)["flops"] for c in rows]
    errors = [1 - store.accuracy(c.model_key)[1] for c in rows]
    store.close()
    F = np.concatenate(told)
    assert F.shape == (8, 2)
    np.testing.assert_allclose(F[:, 0], errors)
    np.testing.assert_array_equal(F[:, 1], flops)


@pytest.mark.parametrize("key, value, message", [("algorithm", "grid", "unknown \\[search\\] algorithm 'grid'"),
                                                 ("objective", "params", "unknown \\[search\\] objective 'params'")])
def test_unknown_algorithms_and_objectives_are_one_line(key, value, message):
    from hilas.search.config import validate

    with pytest.raises(UserError, match=message):
        validate(parse_config({"search": {key: value}}, "run.toml"), "run.toml")
