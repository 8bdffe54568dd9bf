"""Rebuild objects from a config someone else wrote (a run folder's ``results.json``) without running their code.

``hydra.utils.instantiate`` calls whatever ``_target_`` names, so a received run folder could name ``os.system``,
``torch.load`` with ``weights_only=False`` or ``pathlib.Path.write_text``. Every ``_target_`` must therefore be on an
allow-list, checked twice: the string before anything is imported (importing a module runs its code), then the
object it resolves to (a string such as ``adzoo.models.base.os.system`` starts like an adzoo model but is
``os.system``). What is allowed:

- classes defined in ``adzoo.models`` that are ``torch.nn.Module``\\ s (the LightningModules and their parts);
- ``adzoo.backbones``: ``build_backbone`` and the ``nn.Module`` classes defined there;
- ``adzoo.data``: the classes defined there and the source factories ``generated_source`` and ``visa_source``;
- Lightning callbacks defined in ``adzoo.callbacks``, strategies in ``adzoo.utils.strategies``, Hydra callbacks in
  ``adzoo.cli.hydra_callbacks``, learning-rate schedules in ``adzoo.utils.schedules``;
- optimiser and scheduler classes defined in ``torch.optim`` (subclasses of ``Optimizer`` / ``LRScheduler`` /
  ``ReduceLROnPlateau``);
- exactly ``pytorch_lightning.Trainer``, ``pytorch_lightning.loggers.{CSVLogger,TensorBoardLogger,WandbLogger,
  MLFlowLogger}``, ``pytorch_lightning.callbacks.ModelCheckpoint``, and the optuna sweeper with its TPE sampler.

The check does not make the allowed constructors harmless: the paths they are given are still read (and written,
for loggers and the generated data set). See README, "Reproducibility and faults".
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from adzoo.errors import ConfigError

__all__ = ["ALLOWED_SUMMARY", "UntrustedConfigError", "check_trusted", "instantiate_trusted"]


class UntrustedConfigError(ConfigError):
    """A config names a ``_target_`` outside the allow-list; nothing was imported or called for it."""


@dataclass(frozen=True)
class _Rule:
    """Targets under ``package``: classes defined inside it deriving from one of ``bases`` (any class when empty),
    plus the functions in ``functions``, named by where they are defined (``module.qualname``)."""

    package: str
    bases: tuple[str, ...] = ()
    functions: frozenset[str] = frozenset()


_RULES = (
    _Rule("adzoo.models", ("torch.nn.Module",)),
    _Rule("adzoo.backbones", ("torch.nn.Module",), frozenset({"adzoo.backbones.registry.build_backbone"})),
    _Rule("adzoo.data", (), frozenset({"adzoo.data.mvtec.generated_source", "adzoo.data.visa.visa_source"})),
    _Rule("adzoo.callbacks", ("pytorch_lightning.Callback",)),
    _Rule("adzoo.utils.strategies", ("pytorch_lightning.strategies.Strategy",)),
    _Rule("adzoo.cli.hydra_callbacks", ("hydra.experimental.callback.Callback",)),
    _Rule("adzoo.utils.schedules", ("torch.optim.lr_scheduler.LRScheduler",)),
    _Rule(
        "torch.optim",
        ("torch.optim.Optimizer", "torch.optim.lr_scheduler.LRScheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"),
    ),
)
#: classes allowed by their exact name only (the eval path rebuilds the Trainer, its loggers and checkpointing)
_EXACT_CLASSES = frozenset(
    {
        "pytorch_lightning.Trainer",
        "pytorch_lightning.loggers.CSVLogger",
        "pytorch_lightning.loggers.TensorBoardLogger",
        "pytorch_lightning.loggers.WandbLogger",
        "pytorch_lightning.loggers.MLFlowLogger",
        "pytorch_lightning.callbacks.ModelCheckpoint",
        "hydra_plugins.adzoo_optuna_sweeper.optuna_sweeper.OptunaSweeper",  # hydra/sweeper=optuna (adzoo.search)
        "optuna.samplers.TPESampler",
    }
)
ALLOWED_SUMMARY = (
    "allowed: adzoo.models/backbones/data/callbacks/utils.strategies/cli.hydra_callbacks/utils.schedules classes and "
    "factories, "
    "torch.optim optimisers and schedulers, pytorch_lightning Trainer, CSV/TensorBoard/Wandb/MLflow loggers, "
    "ModelCheckpoint, the optuna sweeper and its TPE sampler"
)
# Public dotted names only: no ``__builtins__``, ``_private`` hops, spaces, calls or subscripts.
_DOTTED = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _rule_for(target: str) -> _Rule | None:
    """The rule a target string falls under, decided on the string alone (nothing imported yet)."""
    if target in _EXACT_CLASSES:
        return _Rule(target)
    return next((rule for rule in _RULES if target.startswith(rule.package + ".")), None)


def _locate(target: str, package: str) -> Any:
    """Import and walk ``target`` one name at a time, refusing any hop that leaves ``package``.

    Only modules whose full name is a prefix of ``target`` are imported, so what gets imported is inside the
    package the string check allowed (or one of its parents, e.g. ``adzoo``).
    """
    parts = target.split(".")
    obj: Any = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        dotted = ".".join(parts[: i + 1])
        if isinstance(obj, types.ModuleType) and obj.__name__ == ".".join(parts[:i]):
            try:  # a submodule on the real module path, e.g. adzoo.models -> adzoo.models.patchknn
                obj = importlib.import_module(dotted)
                continue
            except ModuleNotFoundError as exc:
                if exc.name != dotted:  # the submodule exists but failed to import: not the user's doing
                    raise
        if not hasattr(obj, part):
            raise LookupError(f"{dotted} does not exist")
        obj = getattr(obj, part)
        if isinstance(obj, types.ModuleType) and not (_inside(obj.__name__, package) or _inside(package, obj.__name__)):
            raise LookupError(f"{dotted} is the module {obj.__name__}, outside {package}")
    return obj


def _base_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _object_ok(obj: Any, target: str, rule: _Rule) -> str | None:
    """None when the located object is allowed by ``rule``, else why not."""
    if target in _EXACT_CLASSES:
        return None if inspect.isclass(obj) else f"{target} is not a class"
    if inspect.isclass(obj):
        if not _inside(obj.__module__, rule.package):
            return f"it resolves to {obj.__module__}.{obj.__qualname__}, defined outside {rule.package}"
        if rule.bases:
            bases = tuple(_base_class(base) for base in rule.bases)
            if not issubclass(obj, bases):
                return f"{obj.__qualname__} is not a subclass of {' / '.join(b.rsplit('.', 1)[1] for b in rule.bases)}"
        return None
    if inspect.isfunction(obj):
        where = f"{obj.__module__}.{obj.__qualname__}"
        return None if where in rule.functions else f"the function {where} is not one of the allowed factories"
    return f"it resolves to a {type(obj).__name__}, not an allowed class or factory"


def _check_target(target: Any, key: str, where: str) -> None:
    def refuse(reason: str) -> UntrustedConfigError:
        return UntrustedConfigError(f"{where}: {key}={target!r} refused: {reason} ({ALLOWED_SUMMARY})")

    if not isinstance(target, str):
        raise refuse(f"a _target_ must be a dotted name, got a {type(target).__name__}")
    if not _DOTTED.fullmatch(target):
        raise refuse("not a plain dotted name of public attributes")
    rule = _rule_for(target)
    if rule is None:
        raise refuse("not on the allow-list")
    try:
        obj = _locate(target, rule.package)
    except (ImportError, LookupError) as exc:
        raise refuse(str(exc)) from None
    reason = _object_ok(obj, target, rule)
    if reason is not None:
        raise refuse(reason)


def _plain(node: Any, where: str) -> Any:
    """The plain dicts/lists the check walks and :func:`instantiate_trusted` builds from: resolved, so no
    interpolation can turn into a new ``_target_`` after the check."""
    if isinstance(node, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UntrustedConfigError(f"{where}: cannot resolve the config to check its targets: {first}") from exc
    return node


def _walk(node: Any, key: str, where: str) -> None:
    if isinstance(node, Mapping):
        for name, value in node.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                _check_target(value, path, where)
            else:
                _walk(value, path, where)
    elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        for index, value in enumerate(node):
            _walk(value, f"{key}[{index}]", where)
    elif isinstance(node, str) and "${" in node:
        # Hydra wraps the config again before instantiating, which would resolve this (e.g. ${oc.create:...}
        # into a new node with its own _target_) after the check; a resolved config never needs one.
        raise UntrustedConfigError(f"{where}: {key or 'config'}={node!r} refused: an interpolation left in the config")


def check_trusted(node: Any, where: str, *, prefix: str = "") -> None:
    """Raise :class:`UntrustedConfigError` naming the target, its key path (under ``prefix``) and ``where``
    unless every ``_target_`` in ``node`` (dicts, lists, DictConfig, ListConfig; ``_args_`` too) is allowed."""
    _walk(_plain(node, where), prefix, where)


def instantiate_trusted(node: Any, where: str, **kwargs: Any) -> Any:
    """:func:`check_trusted`, then ``hydra.utils.instantiate`` on exactly what was checked.

    ``kwargs`` come from the calling code, not from the config, and are not checked.
    """
    from hydra.utils import instantiate

    plain = _plain(node, where)
    _walk(plain, "", where)
    return instantiate(plain, **kwargs)
