"""Same seed, same numbers: every method, run twice in one session on the CPU, gives bit-identical results.

Users publish adzoo's numbers, so a rerun with the same seed must reproduce them exactly, not approximately.
Each method is run twice through the real app (Hydra composition, Lightning Trainer, metric callback) into two
run folders; per-category metrics and every per-image score must be equal as floats. A second seed must change
a gradient-trained method's scores, otherwise the comparison could not fail.

Bitwise equality is sound here, and only here: both runs are in one process on one machine, with the same thread
count and the same batches (every order is a function of the seed), so every kernel sums in the same order. Runs
that batch differently (DDP, another eval batch size) or run on another machine agree only to float tolerance:
see tests/cli/test_apps.py::test_ddp_on_two_cpu_processes_matches_one_process.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from adzoo._config import config_dir
from adzoo.engine import run
from adzoo.models import METHODS
from tests.conftest import TINY_DATA, TINY_METHOD

pytestmark = pytest.mark.integration

# A method without a TINY_METHOD entry (e.g. one just added) gets the 64² set, which every method accepts.
TINY_64 = ["backbone=test_efficientnet", "data.image_size=64", "data.source.image_size=64"]


def all_methods() -> list[str]:
    """Every registered method and every method config, so a new method is covered as soon as it lands."""
    configs = {p.stem for p in (Path(config_dir()) / "method").glob("*.yaml")}
    return sorted(set(METHODS) | configs)


def tiny_overrides(method: str) -> list[str]:
    extra = TINY_METHOD.get(method, TINY_64)
    return [f"method={method}", *TINY_DATA, *extra, "data.categories=[fabric,pill]", "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false"]  # fmt: skip


def read_scores(run_dir: Path) -> list[tuple[str, str, float, float]]:
    with (run_dir / "predictions.csv").open() as handle:
        return [
            (row["category"], row["path"], float(row["pred_score"]), float(row["avgpool_score"]))
            for row in csv.DictReader(handle)
        ]


def test_every_method_is_covered() -> None:
    """A method missing from METHODS or from conf/method would silently escape the repeatability check."""
    configs = {p.stem for p in (Path(config_dir()) / "method").glob("*.yaml")}
    assert configs == set(METHODS), f"conf/method {sorted(configs)} and METHODS {sorted(METHODS)} disagree"


@pytest.mark.parametrize("method", all_methods())
def test_same_seed_gives_identical_metrics_and_scores(method: str, compose_cfg, tmp_path: Path) -> None:
    first = run(compose_cfg(*tiny_overrides(method), "seed=3", run_dir=tmp_path / "a"))
    second = run(compose_cfg(*tiny_overrides(method), "seed=3", run_dir=tmp_path / "b"))
    assert first["metrics"]["per_category"] == second["metrics"]["per_category"]
    assert first["metrics"]["mean"] == second["metrics"]["mean"]
    assert read_scores(tmp_path / "a") == read_scores(tmp_path / "b")
    assert first["data"]["fingerprint"] == second["data"]["fingerprint"]


def test_another_seed_changes_a_trained_method(compose_cfg, tmp_path: Path) -> None:
    """The equality above is only meaningful if the seed reaches the weights: a new seed must move the scores."""
    run(compose_cfg(*tiny_overrides("uniad"), "seed=3", run_dir=tmp_path / "a"))
    run(compose_cfg(*tiny_overrides("uniad"), "seed=4", run_dir=tmp_path / "b"))
    first, second = read_scores(tmp_path / "a"), read_scores(tmp_path / "b")
    assert [row[:2] for row in first] == [row[:2] for row in second]
    assert [row[2] for row in first] != [row[2] for row in second]
