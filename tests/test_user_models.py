"""Users' models: a factory with a state dict, a torch.export archive, and the errors for what hilas cannot use."""

import numpy as np
import pytest
import torch
from torch import nn

from hilas.devices import export_onnx
from hilas.evaluators import load_exported_model, load_factory_model
from hilas.spaces import BlockDropSpace, ComposedSpace, FilterMaskSpace, check_space, run_model
from tests.user_models import GatedNet, tiny_resnet

FACTORY = "tests.user_models:tiny_resnet"


@pytest.fixture
def trained(tmp_path):
    """The factory's model with weights of its own (so loading them is visible) and its state dict file."""
    model = tiny_resnet()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_factory_and_state_dict(trained, inputs):
    model, path = trained
    loaded = load_factory_model(FACTORY, path)
    assert not loaded.training
    torch.testing.assert_close(loaded(inputs), model(inputs))


@pytest.mark.parametrize("factory, message", [
    ("tests.user_models", "must be 'package.module:function'"),
    ("tests.nothing_here:f", "cannot import tests.nothing_here .*importable: installed, or on PYTHONPATH"),
    ("tests.user_models:missing", "module tests.user_models has no function 'missing'"),
    ("tests.user_models:failing", "factory tests.user_models:failing failed: RuntimeError: no GPU here"),
    ("tests.user_models:not_a_module", "returned a list, not a torch.nn.Module"),
])
def test_bad_factories_are_one_line(factory, message):
    with pytest.raises(ValueError, match=message):
        load_factory_model(factory)


@pytest.mark.parametrize("save, message", [
    (lambda m, p: torch.save(m, p), "is not a state dict that loads with torch.load.weights_only=True.*save "
                                    "model.state_dict.., not the model"),
    (lambda m, p: torch.save({"epoch": 3, "model": m.state_dict()}, p),
     "is not a state dict: it holds a dict with keys 'epoch', 'model'.*its 'model' entry may be one"),
    (lambda m, p: torch.save([m.state_dict()], p), "is not a state dict: it holds a list"),
    (lambda m, p: p.write_bytes(b"not a torch file"), "is not a state dict that loads"),
    (lambda m, p: torch.save({k: v for k, v in m.state_dict().items() if k != "fc.bias"}, p),
     "does not fit the model tests.user_models:tiny_resnet returns: .*Missing key.*fc.bias"),
])
def test_weights_that_are_not_the_models_state_dict_are_one_line(tmp_path, save, message):
    path = tmp_path / "weights.pt"
    save(tiny_resnet(), path)
    with pytest.raises(ValueError, match=message) as e:
        load_factory_model(FACTORY, path)
    assert "\n" not in str(e.value)


def export(model: nn.Module, path, shape=(1, 1, 8, 8)):
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(shape),)), path)
    return path


def test_an_exported_archive_becomes_ordinary_prunable_layers(trained, tmp_path, example, inputs):
    model, _ = trained
    lifted = load_exported_model(export(model, tmp_path / "model.pt2"))
    torch.testing.assert_close(lifted(inputs), model(inputs))  # a batch of 4 from a program exported with 1
    assert isinstance(lifted.stage2[0].conv1, nn.Conv2d) and isinstance(lifted.stage2[0].bn1, nn.BatchNorm2d)
    drops = BlockDropSpace(lifted, example)
    assert drops.blocks == BlockDropSpace(model, example).blocks
    masks = FilterMaskSpace(lifted, example)
    assert {frozenset(g.members) for g in masks.groups} == {frozenset(g.members)
                                                             for g in FilterMaskSpace(model, example).groups}
    space = ComposedSpace([drops, masks])
    check_space(space)
    pruned = space.decode(space.sample(np.random.default_rng(0))).build()
    assert pruned(inputs).shape == (4, 10) and export_onnx(pruned, example, "k").onnx


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


def test_an_exported_layer_hilas_cannot_rebuild_is_named(tmp_path):
    with pytest.raises(ValueError, match="layer 'norm' holds weights used by aten.group_norm.* Conv2d, BatchNorm2d "
                                         "and Linear layers only"):
        load_exported_model(export(Normed(), tmp_path / "normed.pt2"))


def test_a_file_that_is_not_an_export_archive(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"nothing")
    with pytest.raises(ValueError, match="model.pt2 is not a torch.export archive"):
        load_exported_model(tmp_path / "model.pt2")
    with pytest.raises(ValueError, match="exported model not found"):
        load_exported_model(tmp_path / "other.pt2")


def test_a_layer_that_fails_is_named(example):
    with pytest.raises(ValueError, match=r"fails in layer 'stem.0' \(Conv2d\) on an input of shape \[1, 3, 8, 8\]"):
        run_model(tiny_resnet(), torch.zeros(1, 3, 8, 8))


def test_a_layer_the_dependency_graph_cannot_prune_is_named(example):
    space = ComposedSpace([FilterMaskSpace(GatedNet().eval(), example)])
    with pytest.raises(ValueError, match="fails in layer 'gate' .Gate.*cannot prune around that layer"):
        check_space(space)
