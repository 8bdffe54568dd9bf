"""The search space: Hydra's sweep grammar as Optuna distributions, keys checked against the composed config."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from adzoo.errors import ConfigError
from adzoo.search.space import check_keys, override_text, parse_space, space_signature


def test_sweep_grammar_becomes_distributions_and_the_rest_is_fixed() -> None:
    space, fixed = parse_space([
        "model.k=int(interval(1, 9))",
        "model.lr=tag(log, interval(1e-4, 1e-2))",
        "model.scale=interval(0.5, 2)",
        "model.size=range(3, 10, 2)",
        "backbone.out_indices=choice([1,2],[2,3])",
        "model.mode=choice(max,mean)",
        "data.image_size=64",
    ])  # fmt: skip
    assert space["model.k"] == IntDistribution(1, 9)
    assert space["model.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["model.scale"] == FloatDistribution(0.5, 2.0)
    assert space["model.size"] == IntDistribution(3, 9, step=2)  # range's stop is exclusive: 3, 5, 7, 9
    assert space["backbone.out_indices"] == CategoricalDistribution(["[1,2]", "[2,3]"])
    assert space["model.mode"] == CategoricalDistribution(["max", "mean"])
    assert fixed == {"data.image_size": "64"}


def test_a_later_override_replaces_an_earlier_one() -> None:
    space, fixed = parse_space(["model.k=choice(1,2)", "model.k=3"])
    assert space == {} and fixed == {"model.k": "3"}


def test_trial_overrides_read_back_as_the_values() -> None:
    assert override_text("model.lr", 0.0003) == "model.lr=0.0003"
    assert override_text("model.flag", True) == "model.flag=true"
    assert override_text("backbone.out_indices", "[1,2]") == "backbone.out_indices=[1,2]"


def test_a_key_missing_from_the_config_is_named_before_any_trial(compose_cfg) -> None:
    cfg = compose_cfg("method=patchknn")
    check_keys(["model.k", "backbone", "+model.new_key"], cfg)  # a value, a config group, an explicit addition
    with pytest.raises(ConfigError, match=r"'model.kk' is not in the composed config \(keys under model: .*\bk\b"):
        check_keys(["model.kk"], cfg)


def test_the_signature_tells_spaces_apart() -> None:
    one = space_signature({"model.k": IntDistribution(1, 5)}, "val_image_auroc", "maximize")
    assert one == space_signature({"model.k": IntDistribution(1, 5)}, "val_image_auroc", "maximize")
    assert one != space_signature({"model.k": IntDistribution(1, 6)}, "val_image_auroc", "maximize")
    assert one != space_signature({"model.k": IntDistribution(1, 5)}, "val_pixel_auroc", "maximize")
