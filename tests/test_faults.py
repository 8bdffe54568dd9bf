"""Faults that lose nothing: a killed run resumes to the same numbers, a failed run leaves no result, a damaged
cache is rebuilt, and no config path writes outside the run folder by accident.

Everything runs through the real app (Hydra composition, ``engine.run``, the Lightning Trainer) on tiny data;
a kill is simulated by a callback composed in from the command line, as a user's own callback would be.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from adzoo.backbones._io import tensors_digest
from adzoo.engine import is_complete, run
from adzoo.errors import ConfigError
from adzoo.models import NonFiniteLossError
from tests.conftest import TINY_DATA
from tests.test_reproducibility import read_scores, tiny_overrides

pytestmark = pytest.mark.integration


class SimulatedKillError(RuntimeError):
    """Stands in for SIGKILL or a node failure: nothing after it runs."""


class KillAtEpoch(pl.Callback):
    """Dies when training epoch ``epoch`` starts, after the checkpoint of the epoch before was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedKillError(f"killed at the start of epoch {self.epoch}")


KILL = [f"+callbacks.kill._target_={__name__}.KillAtEpoch", "+callbacks.kill.epoch=2"]


def test_killed_run_resumes_from_last_checkpoint_to_the_uninterrupted_metrics(compose_cfg, tmp_path: Path) -> None:
    """UniAD has dropout, feature jitter, shuffled batches and a StepLR that fires after epoch 2 of 3: each of
    them would make a resumed run drift if its state were not restored.

    Compared bit for bit, which is sound because both runs compute the same thing: one process, one thread count,
    and every epoch's batches a function of (seed, epoch). The frozen-feature cache is off for that reason: with
    it, the uninterrupted run serves epoch 2 from features computed in epoch 0's batches while the resumed run
    (whose in-memory cache starts empty) recomputes them in epoch 2's batches, which may differ in the last float
    bits on another CPU; the cache holds no state a resume has to restore.
    """
    uniad = [*tiny_overrides("uniad"), "trainer.max_epochs=3", "model.feature_cache=false"]
    whole = run(compose_cfg(*uniad, run_dir=tmp_path / "whole"))

    with pytest.raises(SimulatedKillError):
        run(compose_cfg(*uniad, *KILL, run_dir=tmp_path / "killed"))
    killed = tmp_path / "killed"
    assert not (killed / "results.json").exists() and not (killed / "predictions.csv").exists()
    last = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1  # a checkpoint per epoch: epochs 0 and 1 are not lost

    resumed = run(compose_cfg(*uniad, "ckpt_path=last", run_dir=killed))
    assert is_complete(killed / "results.json")
    assert resumed["metrics"]["per_category"] == whole["metrics"]["per_category"]
    assert read_scores(killed) == read_scores(tmp_path / "whole")


def test_nan_loss_stops_the_run_naming_where_and_writes_no_result(compose_cfg, tmp_path: Path) -> None:
    """An absurd learning rate blows CAP's projection up to inf within one Adam step."""
    import wandb

    cfg = compose_cfg(
        *tiny_overrides("cap"), "trainer.max_epochs=1", "model.optimizer.lr=1e30", "logger=wandb", "seed=1"
    )
    with pytest.raises(NonFiniteLossError, match=r"cap: non-finite loss \S+ at epoch 0, step 1"):
        run(cfg)
    out = tmp_path / "run"
    assert not (out / "results.json").exists() and not (out / "predictions.csv").exists()
    # the failed job's wandb run is closed, marked failed, and no run is left open in this process
    assert wandb.run is None
    run_files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    assert _wandb_exit_code(run_files[0]) == 1


def _wandb_exit_code(path: Path) -> int | None:
    from wandb.proto import wandb_internal_pb2

    from adzoo.utils.wandb_offline import _payloads

    code = None
    for payload in _payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "exit":
            code = record.exit.exit_code
    return code


@pytest.mark.parametrize(
    "override",
    [
        "logger.csv.save_dir={outside}",
        "trainer.default_root_dir={outside}",
        "callbacks.checkpoint.dirpath={run}/../escape",
        "+callbacks.metrics.output_dir={outside}",
    ],
)
def test_config_paths_cannot_write_outside_the_run_folder(override: str, compose_cfg, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    override = override.format(outside=outside, run=tmp_path / "run")
    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]", override)
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=.* writes outside the run folder"):
        run(cfg)
    assert not outside.exists() and not (tmp_path / "run" / "results.json").exists()


def test_external_paths_are_allowed_when_asked(compose_cfg, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    cfg = compose_cfg(
        "backbone=test_efficientnet",
        *TINY_DATA,
        "data.categories=[fabric]",
        f"logger.csv.save_dir={outside}",
        "allow_external_paths=true",
    )
    run(cfg)
    assert list(outside.glob("csv/*/metrics.csv"))


def test_corrupted_weights_cache_is_detected_and_rebuilt_between_runs(
    compose_cfg, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The packaged ViT's converted weights live in $ADZOO_CACHE_DIR/weights: a file truncated between two runs
    (a full disk, a killed copy) must be rebuilt with a warning, and the rerun must give the same numbers."""
    pytest.importorskip("onnx")
    vit = ["backbone=vit_small_patch14_dinov2", *TINY_DATA, "data.image_size=28", "data.categories=[fabric]"]
    first = run(compose_cfg(*vit, run_dir=tmp_path / "a"))
    (cached,) = (cache_dir / "weights").glob("vit_small_patch14_dinov2*.pt")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])

    with caplog.at_level(logging.WARNING):
        second = run(compose_cfg(*vit, run_dir=tmp_path / "b"))
    assert any(str(cached) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    # bitwise: the rebuilt weights are the same tensors (digest below), run on the same batches in one process
    assert second["metrics"]["per_category"] == first["metrics"]["per_category"]
    blob = torch.load(cached, map_location="cpu", weights_only=True)
    assert blob["digest"] == tensors_digest(list(blob["tensors"]))


def test_generated_image_truncated_between_runs_is_regenerated(
    compose_cfg, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiny = ["backbone=test_efficientnet", *TINY_DATA, "data.categories=[wood]", "data.source.seed=7"]
    first = run(compose_cfg(*tiny, run_dir=tmp_path / "a"))
    (image,) = (cache_dir / "data" / "synthetic").glob("seed7_*/wood/test/good/000.png")
    image.write_bytes(image.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        second = run(compose_cfg(*tiny, run_dir=tmp_path / "b"))
    assert any("wood/test/good/000.png" in r.getMessage() for r in caplog.records)
    # bitwise: the regenerated image has the same pixels (same fingerprint), scored on the same batches in one process
    assert second["metrics"]["per_category"] == first["metrics"]["per_category"]
    assert second["data"]["fingerprint"] == first["data"]["fingerprint"]


def test_a_truncated_checkpoint_is_named_in_one_line_for_resume_and_eval(compose_cfg, tmp_path: Path) -> None:
    """A full disk used to leave a cut ``last.ckpt``; the rerun with ``ckpt_path=last`` then crashed in torch."""
    from adzoo.run_identity import eval_config
    from adzoo.utils.checkpoint import CorruptCheckpointError

    tiny = ["backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]"]
    run(compose_cfg(*tiny, run_dir=tmp_path / "run"))
    last = (tmp_path / "run" / "checkpoints" / "last.ckpt").resolve()
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {last.parent}/.*last.ckpt is truncated"):
        run(compose_cfg(*tiny, "ckpt_path=last", "force=true", run_dir=tmp_path / "run"))
    eval_cfg = eval_config(compose_cfg(f"ckpt_path={tmp_path / 'run'}", config_name="eval", run_dir=tmp_path / "ev"))
    with pytest.raises(CorruptCheckpointError, match="is truncated or not a checkpoint"):
        run(eval_cfg, evaluate_only=True)
    assert not (tmp_path / "ev" / "results.json").exists()


def test_a_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    """The checkpoint is written beside its target and renamed: a write that fails leaves the old file whole."""
    import errno

    from adzoo.errors import OutputFolderError
    from adzoo.utils.checkpoint import AtomicCheckpointIO, load_checkpoint

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)

    def full_disk(obj, handle) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputFolderError, match="disk full while writing checkpoint"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_too_little_free_space_is_refused_before_training(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    from adzoo.errors import OutputFolderError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(1 << 30, (1 << 30) - 4096, 4096))
    with pytest.raises(OutputFolderError, match="not enough free disk space"):
        run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]"))
    assert not (tmp_path / "run" / "results.json").exists()
