"""``pgtheory train --set KEY=VALUE`` type errors exit 2 with one line naming the setting.

Before, ``learning_rate=abc`` (and ``clip_range=abc``, ``target_kl=abc``, ``n_epochs=2.5``) ended
in a TypeError traceback with exit 1, ``n_epochs=abc`` did not name the setting, and
``normalize_obs=maybe`` trained silently with a string where a bool belongs. The settings are
typed without importing torch (:func:`setting_types` reads the configuration classes' source);
``test_setting_types_match_the_dataclasses`` holds that reading to the dataclasses themselves.
"""

import dataclasses

import pytest
from pgtheory.implementations import ALGORITHMS
from pgtheory.implementations.common import ConfigError
from pgtheory.implementations.train import parse_overrides, parse_settings, setting_types

from pgtheory.cli import main

PPO = ALGORITHMS["ppo"][1]


@pytest.mark.parametrize("item, expected", [
    ("learning_rate=abc", "--set learning_rate: expected a number, received 'abc'"),
    ("clip_range=abc", "--set clip_range: expected a number, received 'abc'"),
    ("target_kl=abc", "--set target_kl: expected a number or none, received 'abc'"),
    ("n_epochs=2.5", "--set n_epochs: expected an integer, received '2.5'"),
    ("n_epochs=abc", "--set n_epochs: expected an integer, received 'abc'"),
    ("normalize_obs=maybe", "--set normalize_obs: expected true or false (also 1/0, yes/no), "
                            "received 'maybe'"),
    ("hidden_sizes=64", "--set hidden_sizes: expected a list of integers"),
    ("learning_rate=nan", "--set learning_rate: expected a number, received 'nan'"),
], ids=["lr-abc", "clip-abc", "target-kl-abc", "epochs-float", "epochs-abc", "bool-maybe",
        "hidden-scalar", "lr-nan"])
def test_bad_set_values_exit_2_with_one_line(item, expected, capsys):
    code = main(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "64", "--set", item,
                 "--no-progress", "--no-tensorboard"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err


def test_good_set_values_are_typed():
    got = parse_overrides(["learning_rate=1", "n_epochs=3", "target_kl=none",
                           "normalize_obs=true", "hidden_sizes=[]", "activation=relu"], PPO)
    assert got == {"learning_rate": 1.0, "n_epochs": 3, "target_kl": None,
                   "normalize_obs": True, "hidden_sizes": (), "activation": "relu"}
    assert isinstance(got["learning_rate"], float)
    with pytest.raises(ConfigError, match="n_epochs"):
        parse_overrides(["n_epochs=true"], PPO)


@pytest.mark.parametrize("raw, expected", [("true", True), ("Yes", True), ("1", True),
                                           ("false", False), ("no", False), ("0", False)])
def test_booleans_accept_true_false_1_0_yes_no(raw, expected):
    assert parse_settings("ppo", [f"normalize_obs={raw}"]) == {"normalize_obs": expected}
    with pytest.raises(ValueError, match="normalize_obs: expected true or false"):
        parse_settings("ppo", ["normalize_obs=2"])


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_setting_types_match_the_dataclasses(algorithm):
    # source: the configuration dataclass itself (its fields and their annotations, in order)
    config_class = ALGORITHMS[algorithm][1]
    assert setting_types(algorithm) == {f.name: str(f.type)
                                        for f in dataclasses.fields(config_class)}


def test_parse_settings_agrees_with_parse_overrides():
    items = ["learning_rate=1", "n_epochs=3", "target_kl=none", "normalize_obs=yes",
             "hidden_sizes=[32, 32]", "activation=relu"]
    assert parse_settings("ppo", items) == parse_overrides(items, PPO)
