"""A run config naming the user's own model and data: loaded, split and checked before anything is written."""

import numpy as np
import pytest
import torch

from hilas.search import RunConfig, load_config
from hilas.search.errors import UserError
from hilas.search.runs import start_run
from hilas.search.setup.task import check_searchable, load_task
from tests.user_models import tiny_resnet


@pytest.fixture
def user_files(tmp_path):
    """The tiny factory model's weights and an .npz of 8x8 images, 30 per class for its 10 classes."""
    torch.save(tiny_resnet().state_dict(), tmp_path / "weights.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.integers(0, 256, size=(300, 8, 8), dtype=np.uint8),
             y=np.repeat(np.arange(10), 30))
    return tmp_path


def config(tmp_path, model: str = "", data: str = "", validation: int | None = 20) -> RunConfig:
    path = tmp_path / "run.toml"
    path.write_text(f"""
[model]
{model or 'factory = "tests.user_models:tiny_resnet"'}
{'weights = "weights.pt"' if not model else ''}
input_shape = [1, 1, 8, 8]
[data]
{data or 'format = "npz"'}
{'path = "data.npz"' if not data else ''}
shots = 5
{f'validation = {validation}' if validation else ''}
[search]
budget = 8
population = 4
devices = ["sim"]
[device.sim]
kind = "virtual"
""")
    return load_config(path)


def test_config_paths_are_relative_to_the_config_file(user_files):
    cfg = config(user_files)
    assert cfg.user_model and cfg.model_weights == str(user_files / "weights.pt")
    assert cfg.data_path == str(user_files / "data.npz") and cfg.input_shape == (1, 1, 8, 8)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_the_users_model_and_data_make_a_task_with_a_recorded_split(user_files):
    task = load_task(config(user_files))
    assert task.calibration_x.shape == (50, 1, 8, 8) and task.validation_x.shape == (200, 1, 8, 8)
    split = task.split
    assert split["format"] == "npz" and split["images"] == 300 and split["shots_per_class"] == 5
    assert len(split["few_shot"]) == 50 and not set(split["few_shot"]) & set(split["validation"])
    assert split["sha256"] and load_task(config(user_files)).split == split
    check_searchable(task, config(user_files))


def test_a_held_out_validation_file_scores_every_image_and_shots_come_from_the_other(user_files):
    rng = np.random.default_rng(2)
    np.savez(user_files / "held-out.npz", x=rng.integers(0, 256, size=(70, 8, 8), dtype=np.uint8),
             y=np.repeat(np.arange(10), 7))
    task = load_task(config(user_files, data='format = "npz"\npath = "data.npz"\nvalidation_path = "held-out.npz"',
                            validation=None))
    held_out = np.load(user_files / "held-out.npz")
    np.testing.assert_array_equal(task.validation_y, held_out["y"])
    np.testing.assert_allclose(task.validation_x[:, 0] * 255, held_out["x"], atol=1e-3)
    assert task.split["validation"] == list(range(300, 370)) and max(task.split["few_shot"]) < 300
    assert len(task.split["few_shot"]) == 50


def test_a_few_shot_file_of_exactly_the_shots_is_enough_when_validation_comes_from_another(user_files):
    """With [data] validation_path, the few-shot file needs `shots` images per class and no more: a user who
    gives exactly their few-shot images is not told that they leave none for validation."""
    rng = np.random.default_rng(3)
    np.savez(user_files / "shots.npz", x=rng.integers(0, 256, size=(50, 8, 8), dtype=np.uint8),
             y=np.repeat(np.arange(10), 5))
    np.savez(user_files / "held-out.npz", x=rng.integers(0, 256, size=(70, 8, 8), dtype=np.uint8),
             y=np.repeat(np.arange(10), 7))
    task = load_task(config(user_files, data='format = "npz"\npath = "shots.npz"\nvalidation_path = "held-out.npz"',
                            validation=None))
    assert sorted(task.split["few_shot"]) == list(range(50)) and task.split["validation"] == list(range(50, 120))
    with pytest.raises(UserError, match="class 0 has 5 images: 5 shots leave 0 for validation"):
        load_task(config(user_files, data='format = "npz"\npath = "shots.npz"', validation=None))


@pytest.mark.parametrize("model, data, message", [
    ('factory = "tests.user_models:three_classes"', "", "data.npz has 10 classes .labels 0..9. but the model has 3 "
                                                        "outputs"),
    ("", 'format = "npz"\npath = "wrong.npz"', "data file not found"),
    ("", 'format = "npz"\npath = "small.npz"', "class 9 has 4 images, fewer than the 5 shots per class"),
    ("", 'format = "npz"\npath = "big.npz"', "the images are 1x9x9 but the model takes 1x8x8"),
    ('factory = "tests.user_models:tiny_resnet"\nweights = "not-a-state-dict.pt"', "",
     "not-a-state-dict.pt is not a state dict: it holds a dict with keys 'epoch', 'model'"),
    ('factory = "tests.user_models:gated"', "", "fails in layer 'gate' .Gate."),
])
def test_bad_input_is_one_line_and_writes_nothing(user_files, model, data, message):
    rng = np.random.default_rng(1)
    np.savez(user_files / "small.npz", x=np.zeros((229, 8, 8), np.uint8), y=np.repeat(np.arange(10), 25)[:229])
    np.savez(user_files / "big.npz", x=rng.random((300, 9, 9), dtype=np.float32), y=np.repeat(np.arange(10), 30))
    torch.save({"epoch": 1, "model": tiny_resnet().state_dict()}, user_files / "not-a-state-dict.pt")
    cfg = config(user_files, model, data)
    with pytest.raises(UserError, match=message) as e:
        start_run(cfg, user_files / "run")
    assert "\n" not in str(e.value)
    assert not (user_files / "run").exists()


@pytest.mark.parametrize("text, message", [
    ('[model]\nfactory = "a:b"\n', "input_shape = .1, C, H, W. is needed for your own model"),
    ('[model]\nfactory = "a:b"\nexport = "m.pt2"\ninput_shape = [1, 1, 8, 8]\n', "factory and export name two models"),
    ('[model]\nweights = "w.pt"\n', "weights go with factory"),
    ('[model]\nfactory = "a:b"\ninput_shape = [2, 1, 8, 8]\n', "input_shape must be .1, C, H, W."),
    ('[model]\ninput_shape = [1, "a"]\n', "input_shape must be a list of numbers"),
    ('[data]\nformat = "csv"\n', "unknown .data. format 'csv'"),
    ('[data]\nformat = "npz"\n', 'format "npz" needs path'),
    ('[data]\nformat = "idx"\npath = "x"\n', 'format "idx" needs labels'),
    ('[data]\npath = "x"\n', "path does not apply to the embedded digits"),
    ('[data]\nformat = "npz"\npath = "x"\nvalidation = 0\n', "validation must be at least 1"),
    ('[data]\nformat = "npz"\npath = "x"\nvalidation_path = "v"\nvalidation = 5\n', "leave out .data. validation"),
    ('[data]\nformat = "idx"\npath = "x"\nlabels = "y"\nvalidation_path = "v"\n', "needs validation_labels"),
    ('[accuracy]\nproxy = "magic"\n', "unknown .accuracy. proxy 'magic'"),
    ('[space]\ndrop_recovery_steps = -1\n', "drop_recovery_steps must be 0 or more"),
])
def test_bad_model_and_data_tables(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(path)
