from dataclasses import dataclass, field

import pytest

from vidgen.cli import main
from vidgen.config import load_config, save_config
from vidgen.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Example:
    name: str = "run"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.5\n")
    cfg = load_config(Example, path, ["optim.lr=0.25", "name=x"])
    assert isinstance(cfg, Example) and isinstance(cfg.optim, Optim)
    assert (cfg.name, cfg.steps, cfg.optim.lr, cfg.optim.betas) == ("x", 20, 0.25, [0.9, 0.999])


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(Example, None, ["steps=7", "optim.betas=[0.5,0.6]"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Example, tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize(
    "yaml_text, overrides, where, key",
    [
        ("stepz: 3\n", [], "cfg.yaml", "stepz"),
        ("optim:\n  lrr: 1\n", [], "cfg.yaml", "optim.lrr"),
        ("steps: many\n", [], "cfg.yaml", "steps"),
        ("", ["optim.lr=fast"], "command line", "optim.lr"),
        ("", ["nope=1"], "command line", "nope"),
    ],
)
def test_unknown_key_or_wrong_type_names_key_and_source(tmp_path, yaml_text, overrides, where, key):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(Example, path, overrides)
    assert where in str(err.value) and f"'{key}'" in str(err.value)


def test_malformed_override_and_missing_file_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Example, None, ["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Example, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Example, tmp_path / "bad.yaml")


def test_cli_lists_every_subcommand_and_each_has_help(capsys):
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in ("generate", "train", "inflate", "export", "data", "eval"):
        assert name in listing
        assert main([name, "--help"]) == 0
        assert f"vidgen {name}" in capsys.readouterr().out
