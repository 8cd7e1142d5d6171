"""PRACTISE adapters folded exactly, the distillation proxy, and recovery of a front that resumes per member."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hilas.search.results.recover
from hilas.evaluators import Recipe, distill, recalibrate_batchnorm, top1
from hilas.search import RunConfig, UserError, load_model
from hilas.search.cli.main import app
from hilas.search.results.export import export_candidate
from hilas.search.results.fronts import read_fronts
from hilas.search.results.recover import recover_front, spread
from hilas.search.runs import start_run
from hilas.search.setup.task import load_task
from hilas.search.store import Store
from hilas.spaces import AdaptedDrop, BlockDropSpace, ComposedSpace, FilterMaskSpace, adapter_sites
from tests.conftest import FAST_MEASUREMENT


@pytest.mark.parametrize("block", ["stage1.0", "stage1.1", "stage2.0", "stage2.1"])
def test_folded_adapters_compute_what_the_hooked_adapters_do(tiny_resnet, example, inputs, block):
    """Adapters hooked around the dropped block (random, as after training) and the model with them folded
    into the neighbouring convs' weights are the same function; the folded one has the plain drop's structure."""
    drops = BlockDropSpace(tiny_resnet, example)
    adapted = AdaptedDrop(tiny_resnet, adapter_sites(tiny_resnet, example, block), drops.replacement(block))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapted.parameters:
            p.add_(0.2 * torch.randn_like(p))
    genome = (np.array(drops.blocks) == block).astype(np.int64)
    folded = BlockDropSpace(tiny_resnet, example, adapters={block: adapted.adapters()}).decode(genome).build()
    plain = drops.decode(genome).build()
    with torch.no_grad():
        torch.testing.assert_close(folded(inputs), adapted.model(inputs), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(folded(inputs), plain(inputs), atol=1e-3)
    assert [(n, type(m), getattr(m, "weight", torch.empty(0)).shape) for n, m in folded.named_modules()] == \
        [(n, type(m), getattr(m, "weight", torch.empty(0)).shape) for n, m in plain.named_modules()]


def test_adapter_sites_are_the_convs_around_the_block(tiny_resnet, example):
    sites = adapter_sites(tiny_resnet, example, "stage1.1")
    assert sites.producers == ("stem.0", "stage1.0.conv2")  # write the stream the block reads
    assert sites.consumers == ("stage2.0.conv1", "stage2.0.shortcut.0")  # read the stream it wrote


def test_adapters_survive_a_round_trip_and_compose_with_masks(tiny_resnet, example, inputs):
    drops = BlockDropSpace(tiny_resnet, example)
    adapted = AdaptedDrop(tiny_resnet, adapter_sites(tiny_resnet, example, "stage2.0"), drops.replacement("stage2.0"))
    restored = type(adapted.adapters()).from_state("stage2.0", adapted.adapters().to_state())
    space = ComposedSpace([BlockDropSpace(tiny_resnet, example, adapters={"stage2.0": restored}),
                           FilterMaskSpace(tiny_resnet, example)])
    genome = space.repair(space.sample(np.random.default_rng(2)))
    genome[2] = 1  # drop stage2.0
    assert space.decode(genome).build()(inputs).shape == (4, 10)


def test_distillation_recovers_more_than_batchnorm_recalibration(trained_default):
    """Half the filters removed: re-estimating BatchNorm alone leaves the model far off; a few dozen steps of
    distillation on the same 100 images bring it much closer to the original."""
    task = load_task(RunConfig())
    masks = FilterMaskSpace(task.model, task.example_input, seed_ratios=(0.5,))
    half = ComposedSpace([masks]).decode(masks.seeds()[0])
    recalibrated = top1(recalibrate_batchnorm(half.build(), task.calibration_x), task.validation_x, task.validation_y)
    for recipe in (Recipe(steps=40), Recipe(steps=40, lr=1e-3, batchnorm="frozen", mixup=True, feature_weight=1.0)):
        distilled = top1(distill(half.build(), task.model, task.calibration_x, recipe, layers=["stage1", "stage2"]),
                         task.validation_x, task.validation_y)
        assert distilled > recalibrated, recipe


def test_a_search_with_the_distillation_proxy_exports_the_model_it_scored(trained_default, tmp_path):
    """The proxy distils on one thread, so an export rebuilds the weights the search scored (export refuses a
    candidate whose accuracy it does not reproduce)."""
    cfg = RunConfig(budget=8, population=4, seed=1, devices=("sim",), device_definitions={"sim": {"kind": "virtual"}},
                    measurement=FAST_MEASUREMENT, proxy="distillation", distillation_steps=3)
    front = start_run(cfg, tmp_path / "run")["sim"]
    chosen = next(p for p in front.points if p is not front.baseline)
    readme = (export_candidate(tmp_path / "run", chosen.candidate, tmp_path / "x") / "README.md").read_text()
    assert "3 steps of distillation from the original model" in readme


FEW_STEPS = Recipe(steps=4)  # the wiring is under test here, not the recipe (benchmarks/recovery_ablation)


@pytest.fixture
def run(finished_runs, trained_default, tmp_path):
    """A copy of a finished run (the session's runs stay as they are for other tests)."""
    return shutil.copytree(finished_runs[0], tmp_path / "run")


def test_recovery_scores_every_front_member_and_resumes_where_it_stopped(run, monkeypatch):
    members = {p.model_key for f in read_fronts(run).values() for p in f.points}
    recovered = []
    original = hilas.search.results.recover.recover_member

    def counting(store, space, task, cfg, point, *args):
        recovered.append(point.model_key)
        original(store, space, task, cfg, point, *args)
        if len(recovered) == 2:
            raise KeyboardInterrupt  # the user stops it after two members

    monkeypatch.setattr(hilas.search.results.recover, "recover_member", counting)
    with pytest.raises(KeyboardInterrupt):
        recover_front(run, recipe=FEW_STEPS)
    store = Store.open(run)
    first = {k: store.recovered_accuracy(k) for k in recovered}
    assert all(first.values()) and len(list((run / "recovered").glob("*.pt"))) == 2
    store.close()

    result = recover_front(run, recipe=FEW_STEPS)
    assert sorted(recovered) == sorted(members) and len(recovered) == len(members)  # nothing twice
    store = Store.open(run)
    assert {k: store.recovered_accuracy(k) for k in first} == first
    assert store.recovery["method"] == f"distillation on 10 shots per class: {FEW_STEPS.describe()}"
    assert store.recovery["recipe"]["steps"] == FEW_STEPS.steps
    store.close()
    for front in result.values():
        assert front.accuracy_source == "recovered" and front.points
        assert {p.model_key for p in front.evaluated} <= members

    recover_front(run, recipe=FEW_STEPS)  # all done with these settings: nothing to do
    assert len(recovered) == len(members)
    recover_front(run, recipe=Recipe(steps=5))  # other settings: every member again
    assert len(recovered) == 2 * len(members)


def test_front_recover_show_and_plot_through_the_command_line(run, tmp_path):
    runner = CliRunner()
    before = runner.invoke(app, ["front", "show", str(run), "--accuracy", "recovered"])
    assert before.exit_code == 2 and "no recovered front yet" in before.output
    result = runner.invoke(app, ["front", "recover", str(run), "--device", "sim", "--recipe", "steps=4",
                                 "-r", "lr=0.0005", "--host", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Pareto front after recovery on sim" in result.output and "s each (median" in result.output
    shown = runner.invoke(app, ["front", "show", str(run), "--device", "sim", "--accuracy", "recovered", "--json"])
    data = json.loads(shown.output)
    assert data["accuracy_source"] == "recovered" and data["front"]
    plotted = runner.invoke(app, ["front", "plot", str(run), "--accuracy", "both", "-o", str(tmp_path / "f.png")])
    assert plotted.exit_code == 0 and (tmp_path / "f.png").stat().st_size > 0


def test_export_takes_the_recovered_weights_once_there_are_some(run, tmp_path):
    member = next(p for f in read_fronts(run).values() for p in f.points if p is not f.baseline)
    with pytest.raises(UserError, match="has not been recovered"):
        export_candidate(run, member.candidate, tmp_path / "none", weights="recovered")
    recover_front(run, recipe=FEW_STEPS)
    store = Store.open(run)
    recovered = store.recovered_accuracy(member.model_key).accuracy
    store.close()
    task = load_task(RunConfig())
    default = load_model(export_candidate(run, member.candidate, tmp_path / "recovered"))
    proxy = load_model(export_candidate(run, member.candidate, tmp_path / "proxy", weights="proxy"))
    assert top1(default, task.validation_x, task.validation_y) == recovered
    assert top1(proxy, task.validation_x, task.validation_y) == member.accuracy
    assert "recovered by `hilas front recover`" in (tmp_path / "recovered" / "README.md").read_text()
    with pytest.raises(UserError, match="--weights must be one of"):
        export_candidate(run, member.candidate, tmp_path / "bad", weights="best")


def test_a_capped_recovery_spreads_its_members_along_the_front_keeping_both_ends():
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread(list(range(3)), 4) == [0, 1, 2] and spread(list(range(5)), None) == list(range(5))


def test_a_member_that_recovery_would_hurt_keeps_its_weights_and_exports_them(run, tmp_path):
    """A recipe that wrecks the weights (a learning rate of 10): every pruned member keeps the weights it had
    before, the store and the table say so, and the export reproduces that accuracy."""
    fronts_after = recover_front(run, recipe=Recipe(steps=3, lr=10.0), device="sim")
    store = Store.open(run)
    try:
        rows = {p.model_key: store.recovered_accuracy(p.model_key) for p in fronts_after["sim"].evaluated}
        baseline_key = store.baseline_key
    finally:
        store.close()
    pruned = {k: r for k, r in rows.items() if k != baseline_key}
    assert pruned and all(r.kept == "before" and r.accuracy == r.before for r in pruned.values())
    proxy = {p.model_key: p.accuracy for p in read_fronts(run)["sim"].evaluated}
    assert all(r.accuracy == proxy[k] for k, r in pruned.items())  # the proxy's weights, on the same images
    member = next(p for p in fronts_after["sim"].evaluated if p.model_key != baseline_key)
    assert member.kept == "before"
    exported = export_candidate(run, member.candidate, tmp_path / "x")
    assert "so those were kept" in (exported / "README.md").read_text()
    shown = CliRunner().invoke(app, ["front", "show", str(run), "--device", "sim", "--accuracy", "recovered"])
    assert f"{member.candidate}°" in shown.output and "kept the weights it had before" in shown.output


def test_the_recovered_front_has_the_original_as_baseline_when_it_was_not_recovered(run, monkeypatch):
    """Only pruned members recovered: the front after recovery still has the unpruned model (at its own top-1) to
    measure hypervolume and speed-ups against."""
    store = Store.open(run)
    baseline_key, reference = store.baseline_key, store.reference_accuracy
    store.close()
    original_members = hilas.search.results.recover.front_members
    monkeypatch.setattr(hilas.search.results.recover, "front_members", lambda *args: [
        p for p in original_members(*args) if p.model_key != baseline_key])
    front = recover_front(run, recipe=FEW_STEPS, device="sim")["sim"]
    assert front.baseline is not None and front.baseline.model_key == baseline_key
    assert front.baseline.accuracy == reference and front.hypervolume > 0
    shown = CliRunner().invoke(app, ["front", "show", str(run), "--device", "sim", "--accuracy", "recovered"])
    assert shown.exit_code == 0 and "x │" in shown.output and "hypervolume 0.000" not in shown.output


@pytest.mark.parametrize("args, message", [
    (["--recipe", "step=3"], "unknown recovery recipe setting 'step'"),
    (["--recipe", "steps=1.5"], "must be a whole number"),
    (["--recipe", "batchnorm=sometimes"], "batchnorm must be one of train, frozen"),
    (["--recipe", "steps"], "write KEY=VALUE"),
    (["--host", "tpu"], "host device must be one of auto, cpu, cuda"),
    (["--members", "1"], "--members must be at least 2"),
])
def test_front_recover_refuses_bad_settings_in_one_line(run, args, message):
    result = CliRunner().invoke(app, ["front", "recover", str(run), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (run / "recovered").exists()


def test_recovery_recipes_read_from_options():
    assert Recipe.from_options({"steps": 600, "lr": 3e-4, "mixup": True}) == Recipe(steps=600, lr=3e-4, mixup=True)
    assert Recipe.from_options({"lr": 1}).lr == 1.0 and isinstance(Recipe.from_options({"lr": 1}).lr, float)
    with pytest.raises(ValueError, match="must be true or false"):
        Recipe.from_options({"mixup": 1})
    with pytest.raises(ValueError, match="steps >= 0"):
        Recipe(steps=-1)
