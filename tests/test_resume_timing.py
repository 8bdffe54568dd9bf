"""A run stopped after its first epoch and resumed with ckpt_path=last records the fit time of both attempts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl

from adzoo.engine import run
from tests.conftest import TINY_DATA, TINY_METHOD

FIRST_ATTEMPT_S = 0.5  # the first attempt's epoch lasts at least this long


class CrashAtSecondEpoch(pl.Callback):
    """The process dies as the second epoch starts, after the first epoch's checkpoint was written."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            time.sleep(FIRST_ATTEMPT_S)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


def test_resumed_run_records_every_attempts_fit_time(compose_cfg, tmp_path: Path) -> None:
    args = [*TINY_DATA, "method=uniad", *TINY_METHOD["uniad"], "trainer.max_epochs=2", "data.categories=[fabric]"]
    crash = f"+callbacks.crash._target_={__name__}.CrashAtSecondEpoch"
    with pytest.raises(RuntimeError, match="killed"):
        run(compose_cfg(*args, crash))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    run(compose_cfg(*args, "ckpt_path=last"))
    timing = json.loads((tmp_path / "run" / "results.json").read_text())["timing"]
    assert timing["resumed"] is True and timing["attempts"] == 2
    assert timing["fit_s"] >= timing["fit_s_this_attempt"] + FIRST_ATTEMPT_S, timing
    assert timing["per_group"][0]["attempts"] == 2


def test_uninterrupted_run_is_one_attempt(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg(*TINY_DATA, *TINY_METHOD["patchknn"], "data.categories=[fabric]"))
    timing = json.loads((tmp_path / "run" / "results.json").read_text())["timing"]
    assert timing["resumed"] is False and timing["attempts"] == 1
    assert timing["fit_s"] == timing["fit_s_this_attempt"]
