"""What adzoo keeps off the console, in one place, and the ``verbose`` switch that brings it all back.

A run should print one line per real event: what it trains on, what it found, its numbers. Lightning, torch and
faiss also print start-up chatter (hardware availability, a logging-service tip, which SIMD build faiss fell back
to) and warnings that are about their own code or about choices adzoo makes on purpose (a fit-once method has no
optimiser; frozen backbones stay in eval mode). Each of those is silenced here by its exact message, category and
module, never by a blanket ignore, so an unexpected warning still shows. ``verbose=true`` (conf/train.yaml,
conf/eval.yaml) undoes every filter below.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

#: (message regex, category, module regex) of warnings that are not the user's concern
WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # fit-once methods (patchknn, patchcore, CAP) fill a memory bank: no optimiser is the design, not a mistake
    (r"`LightningModule.configure_optimizers` returned `None`", UserWarning, r"(pytorch_lightning|lightning\.pytorch)"),
    # Lightning's own use of a torch API that torch deprecated; nothing a user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"(pytorch_lightning|lightning\.pytorch)"),
    # frozen backbones stay in eval mode on purpose (BatchNorm statistics, dropout)
    (r".*module\(s\) in eval mode at the start of training", UserWarning, r"(pytorch_lightning|lightning\.pytorch)"),
)

#: the same for adzoo-export, only while it traces: the model is traced at the run's fixed image size (the export
#: bundle records it), so shape checks turning into constants and torch.jit's own deprecation notice say nothing new
TRACING_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`torch\.jit\.trace(_method)?` is deprecated", FutureWarning, r"torch\.jit"),
    (r"Converting a tensor to a Python boolean might cause the trace", Warning, r"adzoo\."),
)

#: loggers whose INFO lines are start-up chatter (faiss's SIMD fallbacks, "Seed set to 0" twice per run)
QUIET_LOGGERS = ("faiss.loader", "lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed")

#: (logger, message regex) of single INFO lines from loggers that also carry real events ("Restoring states from
#: the checkpoint path at ..." when a run resumes is kept)
DROPPED_RECORDS: tuple[tuple[str, str], ...] = tuple(
    (f"{package}.{name}", pattern)
    for package in ("pytorch_lightning", "lightning.pytorch")
    for name, pattern in (
        ("utilities.rank_zero", r"(GPU|TPU|HPU) available:"),
        ("utilities.rank_zero", r".*Tip: For seamless cloud logging"),
        ("utilities.rank_zero", r".*litmodels"),
        ("utilities.rank_zero", r"`Trainer.fit` stopped: `max_epochs="),  # the progress output shows the last epoch
        ("trainer.connectors.checkpoint_connector", r"`weights_only` was not set"),
    )
)


class _DropMessages(logging.Filter):
    """Drops records whose message matches one of a logger's patterns; every other record passes."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


_state: dict[str, list] = {"warnings": [], "levels": [], "filters": []}
_verbose = False


def _add_warning_filters(entries: tuple[tuple[str, type[Warning], str], ...]) -> list:
    added = []
    for message, category, module in entries:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
        added.append(warnings.filters[0])
    return added


def _remove_warning_filters(added: list) -> None:
    for entry in added:
        with contextlib.suppress(ValueError):
            warnings.filters.remove(entry)
    warnings._filters_mutated()  # type: ignore[attr-defined]  # the module's filter cache, as filterwarnings does


def _undo() -> None:
    _remove_warning_filters(_state["warnings"])
    for logger, level in _state["levels"]:
        logger.setLevel(level)
    for logger, log_filter in _state["filters"]:
        logger.removeFilter(log_filter)
    _state.update(warnings=[], levels=[], filters=[])


def quiet(verbose: bool = False) -> None:
    """Apply the filters above (``verbose=False``) or remove them again (``verbose=True``). Idempotent: the apps
    call it once at start-up, the engine again with the run's own ``verbose``."""
    global _verbose
    _undo()
    _verbose = bool(verbose)
    if _verbose:
        return
    _state["warnings"] = _add_warning_filters(WARNINGS)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        _state["levels"].append((logger, logger.level))
        logger.setLevel(logging.WARNING)
    patterns: dict[str, list[str]] = {}
    for name, pattern in DROPPED_RECORDS:
        patterns.setdefault(name, []).append(pattern)
    for name, items in patterns.items():
        logger, log_filter = logging.getLogger(name), _DropMessages(items)
        logger.addFilter(log_filter)
        _state["filters"].append((logger, log_filter))


def is_verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """While tracing a model for export: without :data:`TRACING_WARNINGS` unless ``verbose``."""
    if _verbose:
        yield
        return
    added = _add_warning_filters(TRACING_WARNINGS)
    try:
        yield
    finally:
        _remove_warning_filters(added)
