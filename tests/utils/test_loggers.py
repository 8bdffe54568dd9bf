"""logger=mlflow through the real app, read back from its local store with MlflowClient (no server, no network)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from adzoo.engine import run
from adzoo.leaderboard import aggregate, collect
from adzoo.leaderboard.collect import Row
from adzoo.leaderboard.render import main_table, pivot_table
from adzoo.utils.loggers import build_loggers, close_loggers, local_mlflow
from tests.conftest import TINY_DATA, TINY_METHOD
from tests.leaderboard.conftest import results_payload, write_run

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

MLFLOW = [*TINY_DATA, *TINY_METHOD["patchknn"], "method=patchknn", "logger=mlflow"]


def _client(tracking_uri: str) -> MlflowClient:
    """A client on the store, with mlflow imported the app's way (telemetry off)."""
    return local_mlflow().MlflowClient(tracking_uri)


def _runs(client: MlflowClient, experiment: str = "adzoo") -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([found.experiment_id])


@pytest.mark.integration
def test_mlflow_run_holds_config_per_category_metrics_and_maps(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*MLFLOW, "data.categories=[fabric,pill]")
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'logs'}/mlflow.db"
    run(cfg)
    client = _client(cfg.logger.mlflow.tracking_uri)
    (logged,) = _runs(client)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "patchknn-synthetic-unified-seed0"
    assert logged.data.params["method_name"] == "patchknn"
    assert logged.data.tags["dev"] == "true"  # tags=[dev] as MLflow key/value tags
    per_category = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["per_category"]
    assert set(per_category) == {"fabric", "pill"}
    checked = 0
    for category, metrics in per_category.items():
        for key, value in metrics.items():
            if not math.isnan(value):
                assert logged.data.metrics[f"test/{category}/{key}"] == pytest.approx(value), (category, key)
                checked += 1
    assert checked >= 2 * 6
    maps = client.list_artifacts(logged.info.run_id, "anomaly_maps")
    assert sorted(a.path for a in maps) == ["anomaly_maps/fabric.png", "anomaly_maps/pill.png"]
    assert all(a.file_size and a.file_size > 100 for a in maps)
    # the store and the artifacts stay under the log folder
    assert Path(client.get_experiment_by_name("adzoo").artifact_location) == tmp_path / "logs" / "mlartifacts"


@pytest.mark.integration
def test_separate_setting_logs_one_mlflow_run_per_category(compose_cfg) -> None:
    cfg = compose_cfg(*MLFLOW, "data.setting=separate", "data.categories=[fabric,pill]")
    payload = run(cfg)
    runs = {r.info.run_name: r for r in _runs(_client(cfg.logger.mlflow.tracking_uri))}
    name = "patchknn-synthetic-separate-seed0"
    assert set(runs) == {f"{name}-fabric", f"{name}-pill"}
    for category in ("fabric", "pill"):
        metrics = runs[f"{name}-{category}"].data.metrics
        image_auroc = payload["metrics"]["per_category"][category]["image_auroc"]
        assert metrics[f"test/{category}/image_auroc"] == pytest.approx(image_auroc)
        assert not any(key.startswith("test/pill/" if category == "fabric" else "test/fabric/") for key in metrics)


def test_a_failed_job_ends_its_mlflow_run_failed(compose_cfg) -> None:
    cfg = compose_cfg(*MLFLOW)
    (logger,) = build_loggers(cfg, "fabric")
    logger.log_metrics({"loss": 1.0})
    close_loggers([logger], failed=True)
    (logged,) = _runs(_client(cfg.logger.mlflow.tracking_uri))
    assert logged.info.run_name == "patchknn-synthetic-unified-seed0-fabric"
    assert logged.info.status == "FAILED"


def test_logger_many_includes_mlflow(compose_cfg) -> None:
    cfg = compose_cfg("logger=many")
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb", "mlflow"}
    assert cfg.logger.mlflow._target_ == "pytorch_lightning.loggers.MLFlowLogger"
    assert cfg.logger.mlflow.tracking_uri.startswith("sqlite:///")  # a local store, never a server


@pytest.mark.parametrize("label", ["unified", "fabric"])
def test_every_logger_is_told_the_model_label_its_own_way(compose_cfg, label: str) -> None:
    cfg = compose_cfg(*MLFLOW, "logger=many")
    loggers = {type(logger).__name__: logger for logger in build_loggers(cfg, label)}
    name = "patchknn-synthetic-unified-seed0" + ("" if label == "unified" else f"-{label}")
    assert loggers["CSVLogger"].version == loggers["TensorBoardLogger"].version == label
    assert loggers["WandbLogger"]._wandb_init["name"] == name
    assert loggers["MLFlowLogger"]._run_name == name
    assert loggers["MLFlowLogger"].tags == {"dev": "true"}
    close_loggers(list(loggers.values()), failed=False)  # nothing was started: closing is a no-op


def _board(tmp_path: Path) -> list[Row]:
    """Two seeds of one patchknn config as results.json files: one leaderboard row."""
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"s{seed}", results_payload(tmp_path / "runs" / f"s{seed}", seed=seed))
    return aggregate(collect([tmp_path / "runs"]))


def test_leaderboard_tables_are_logged_to_their_own_mlflow_run(tmp_path: Path) -> None:
    from adzoo.leaderboard.mlflow_table import log_leaderboard

    rows = _board(tmp_path)
    (tmp_path / "leaderboard.md").write_text("# the board\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = log_leaderboard(rows, uri, "adzoo", "leaderboard-test", sweep_dir=tmp_path, artifact_location=None)
    client = _client(uri)
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "leaderboard-test"
    assert logged.data.tags["job_type"] == "leaderboard"
    experiment = logged.info.experiment_id
    table = client.load_table(experiment, "leaderboard.json", run_ids=[run_id])
    header, body = main_table(rows)
    assert list(table.columns) == header and len(table) == len(body) == 1
    assert table["seeds"][0] == body[0][header.index("seeds")]
    pivot = client.load_table(experiment, "leaderboard_per_category/image_auroc.json", run_ids=[run_id])
    pivot_header, pivot_body = pivot_table(rows, "image_auroc")
    assert pivot["fabric"][0] == pivot_body[0][pivot_header.index("fabric")]
    assert pivot["fabric"][0].startswith("90.0")  # results_payload's fabric image AUROC, 0.9, in both seeds
    markdown = client.download_artifacts(run_id, "leaderboard.md", str(tmp_path / "down"))
    assert Path(markdown).read_text() == "# the board\n"


def test_sweep_end_logs_the_leaderboard_to_mlflow(compose_cfg, tmp_path: Path) -> None:
    from adzoo.cli.hydra_callbacks import SweepLeaderboard

    _board(tmp_path)
    cfg = compose_cfg("logger=mlflow", f"hydra.sweep.dir={tmp_path / 'runs'}", "sweep_name=demo")
    SweepLeaderboard(plots=False, bootstrap={"n_resamples": 50}).on_multirun_end(cfg)
    (logged,) = _runs(_client(cfg.logger.mlflow.tracking_uri))
    assert logged.info.run_name == "leaderboard-demo" and logged.data.tags["job_type"] == "leaderboard"
    artifacts = {a.path for a in _client(cfg.logger.mlflow.tracking_uri).list_artifacts(logged.info.run_id)}
    assert {"leaderboard.json", "leaderboard.md", "leaderboard_per_category"} <= artifacts
