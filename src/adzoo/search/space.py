"""A search space from Hydra's sweep grammar, as Optuna distributions, checked against the composed config.

``hydra.sweeper.params`` (``conf/hparams_search/*``) and the command line write a space the way a Hydra user
already does: ``choice(a, b)``, ``range(1, 9, 2)``, ``interval(0.1, 1)``, ``int(interval(1, 9))`` and
``tag(log, interval(1e-4, 1e-2))``; any other value is fixed for every trial.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from adzoo.errors import ConfigError

_ABSENT = object()


def _distribution(override: Override) -> BaseDistribution:
    value = override.value()
    key = override.get_key_element()
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    if override.is_range_sweep() and not getattr(value, "shuffle", False):
        assert isinstance(value, RangeSweep)
        numbers = (value.start, value.stop, value.step)
        if all(isinstance(v, int) for v in numbers):
            last = int(value.stop) - 1 - (int(value.stop) - 1 - int(value.start)) % int(value.step)
            return IntDistribution(int(value.start), last, step=int(value.step))
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    if not choices:
        raise ConfigError(f"hydra.sweeper.params.{key}: an empty choice")
    return CategoricalDistribution(choices)


def parse_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(searched key -> distribution, fixed key -> value text) from override strings, the later winning."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = _distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return space, fixed


def check_keys(keys: Sequence[str], cfg: DictConfig) -> None:
    """Every searched key names a config value or a config group of the composed config; one line otherwise,
    before any trial runs (a typo would otherwise fail every trial, or worse, add an unused key)."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
    for key in keys:
        if key.startswith("+"):  # an explicit addition: the user says the key is new
            continue
        bare = key.lstrip("~")
        if bare in choices or OmegaConf.select(cfg, bare, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            continue
        parent = bare.rpartition(".")[0]
        near = OmegaConf.select(cfg, parent, default=None) if parent else None
        known = f" (keys under {parent}: {', '.join(map(str, near))})" if isinstance(near, DictConfig) else ""
        raise ConfigError(f"hydra.sweeper.params: search space key {key!r} is not in the composed config{known}")


def space_signature(space: dict[str, BaseDistribution], objective: str, direction: str) -> str:
    """What a stored study must match to be resumed: its distributions, objective and direction."""
    payload = {
        "params": {k: json.loads(distribution_to_json(d)) for k, d in sorted(space.items())},
        "objective": objective,
        "direction": direction,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def override_text(key: str, value: Any) -> str:
    """``key=value`` for a trial's override: numbers as Python writes them, bools as Hydra reads them."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
