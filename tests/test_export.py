"""Exporting a chosen candidate: the files, the rebuilt module, and the accuracy it reproduces."""

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from hilas.evaluators import top1
from hilas.search import Run, RunConfig, UserError, load_model
from hilas.search.cli.main import app
from hilas.search.results.fronts import read_fronts
from hilas.search.setup.task import load_task
from hilas.search.store import Store


def stored(run, candidate: int) -> tuple[float, dict]:
    """A candidate's accuracy and structure as the run stored them."""
    store = Store.open(run)
    row = next(c for c in store.candidates() if c.candidate == candidate)
    accuracy, structure = store.accuracy(row.model_key)[1], store.structure(row.structure_key)
    store.close()
    return accuracy, structure


def test_an_exported_front_member_reproduces_its_accuracy_and_its_onnx_matches(finished_runs, trained_default,
                                                                                tmp_path):
    run = finished_runs[0]
    front = read_fronts(run)["sim"]
    chosen = next(p for p in front.points if p is not front.baseline)
    result = CliRunner().invoke(app, ["front", "export", str(run), str(chosen.candidate), "-o", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["README.md", "model.onnx", "state_dict.pt",
                                                                  "structure.json"]
    model = load_model(tmp_path / "x")
    task = load_task(RunConfig())
    accuracy, _ = stored(run, chosen.candidate)
    assert top1(model, task.validation_x, task.validation_y) == accuracy == chosen.accuracy
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "x" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)
    readme = (tmp_path / "x" / "README.md").read_text()
    assert f"Top-1 **{100 * accuracy:.1f} %**" in readme and f"{chosen.latency.median_ms:.4f}" in readme
    assert "load_model" in readme and "sim-fast" in readme

    # an export of the first format (its keys named arch_key and key) loads as it did
    structure = json.loads((tmp_path / "x" / "structure.json").read_text())
    first = {"arch_key" if k == "structure_key" else "key" if k == "model_key" else k: v for k, v in structure.items()}
    (tmp_path / "x" / "structure.json").write_text(json.dumps({**first, "format": "hilas-export-1"}))
    assert top1(load_model(tmp_path / "x"), task.validation_x, task.validation_y) == accuracy


def test_the_rebuilt_module_has_the_candidates_structure(finished_runs, trained_default, tmp_path):
    run = Run(finished_runs[0])
    store = Store.open(run.dir)
    # a candidate with a dropped block and pruned channels (the first population holds single drops)
    candidate = next(c.candidate for c in store.candidates()
                     if store.structure(c.structure_key)["dropped"] and store.accuracy(c.model_key)[1] is not None)
    store.close()
    path = run.export(candidate, tmp_path / "x")
    structure = json.loads((path / "structure.json").read_text())
    _, expected = stored(run.dir, candidate)
    assert structure["dropped_blocks"] == expected["dropped"]
    assert {g: len(k["kept"]) for g, k in structure["kept_channels"].items()} == {
        g: w for g, w in expected["widths"].items() if w}
    model = load_model(path)
    for block in structure["dropped_blocks"]:
        assert isinstance(model.get_submodule(block), torch.nn.Identity)
    layers = dict(model.named_modules())
    for kept in structure["kept_channels"].values():
        for layer in (layers[name] for name in kept["layers"] if name in layers):
            assert layer.out_channels == len(kept["kept"])
    assert sum(p.numel() for p in model.parameters()) == expected["params"]


def test_export_refuses_weights_that_are_not_the_ones_searched(finished_runs, trained_default, tmp_path,
                                                                 monkeypatch):
    def retrained(cfg, on_train_epoch=None):
        task = load_task(cfg, on_train_epoch)
        model = type(task.model)()
        model.load_state_dict(task.model.state_dict())
        with torch.no_grad():
            model.fc.weight.add_(0.5 * torch.randn_like(model.fc.weight))
        return dataclasses.replace(task, model=model.eval())

    monkeypatch.setattr("hilas.search.results.export.load_task", retrained)
    with pytest.raises(UserError, match="not the ones the run searched"):
        Run(finished_runs[0]).export(1, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_export_bad_input(finished_runs, tmp_path):
    run = Run(finished_runs[0])
    with pytest.raises(UserError, match="has no candidate 9999"):
        run.export(9999, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("")
    with pytest.raises(UserError, match="not an empty directory"):
        run.export(1, tmp_path / "full")
    with pytest.raises(UserError, match="is not a hilas export"):
        load_model(tmp_path)
