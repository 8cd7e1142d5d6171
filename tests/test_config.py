import pytest

from hilas.search.config import RunConfig, load_config
from hilas.search.errors import UserError


def write(tmp_path, text):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_full_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, """
[model]
name = "digits-resnet"
[data]
shots = 5
[space]
drops = false
[search]
budget = 40
population = 8
seed = 3
devices = ["local-cpu", "sim"]
fresh = true
[measurement]
min_samples = 20
min_seconds = 0.1
[device.sim]
kind = "virtual"
[device.sim.measurement]
rounds = 5
"""))
    assert cfg.shots == 5 and not cfg.drops and cfg.budget == 40 and cfg.devices == ("local-cpu", "sim")
    assert cfg.protocol().min_samples == 20 and cfg.fresh
    assert cfg.device_definitions["sim"]["measurement"] == {"rounds": 5}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text, message", [
    ("[search]\nbudgte = 3\n", "unknown key 'budgte'"),
    ("[serch]\n", "unknown table"),
    ("[search]\nbudget = 'many'\n", "must be a int"),
    ("[search]\nbudget = 2\n", "at least the population"),
    ("[model]\nname = 'vgg'\n", "unknown model 'vgg'"),
    ("[space]\nmasks = false\ndrops = false\n", "enable at least one"),
    ("[measurement]\nmin_samples = -1\n", "[measurement]"),
    ("[device.x]\nfoo = 1\n", "needs kind"),
    ("[device.x]\nkind = 'virtual'\nmeasurement = 3\n", "measurement must be a table"),
    ("[device.x]\nkind = 'virtual'\n[device.x.measurement]\nroundz = 3\n", "[device.x.measurement] unknown"),
    ("[device.x]\nkind = 'virtual'\n[device.x.measurement]\nrounds = 0\n", "rounds must be > 0"),
    ("[search]\nfresh = 1\n", "fresh must be a bool"),
    ("[search\n", "not valid TOML"),
])
def test_bad_configs_are_one_clear_line(tmp_path, text, message):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value).strip()


def test_missing_config(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.toml")
