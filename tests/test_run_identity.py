"""Run identity: different data or config never share a folder, execution details never split one, a skip checks
the digest and the data, and an eval never writes into (or is taken for) a training run.

Real Hydra composition (the run folder is resolved by Hydra's own ``hydra.run.dir``), the real engine and
Lightning Trainer, on tiny MVTec-layout trees built here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from adzoo.engine import run
from adzoo.run_identity import RunFolderConflictError, eval_config, folder_name, identity, identity_digest
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration

FAST = ["backbone=test_efficientnet", "trainer.enable_progress_bar=false"]


def _mvtec_tree(root: Path, cache_dir: Path, categories: tuple[str, ...] = ("fabric",)) -> Path:
    """A copy of the tiny generated set's categories as a plain MVTec-layout folder at ``root``."""
    from adzoo.data.mvtec import generated_source

    source = generated_source(cache_dir / "data" / "synthetic", seed=0, image_size=32, n_train=6, n_test_good=2,
                              n_test_per_defect=1)  # fmt: skip
    for category in categories:
        shutil.copytree(source.root / category, root / category)
    return root


def _mvtec(root: Path) -> list[str]:
    return ["data=mvtec", f"data.root={root}", "data.image_size=32", "data.num_workers=0", *FAST]


def _run_dir(cfg) -> Path:
    return Path(cfg.hydra.run.dir)


def test_roots_that_clean_to_the_same_text_get_different_folders(compose_cfg, tmp_path: Path, cache_dir) -> None:
    """The old folder name was the cleaned override text: /x/two_cats and /x/two/cats both became two_cats."""
    one = _mvtec_tree(tmp_path / "x" / "two_cats", cache_dir)
    two = _mvtec_tree(tmp_path / "x" / "two" / "cats", cache_dir)
    first = compose_cfg(*_mvtec(one))
    second = compose_cfg(*_mvtec(two))
    assert _run_dir(first) != _run_dir(second)
    run(compose_cfg(*_mvtec(one), run_dir=_run_dir(first)))
    # Forced into the first one's folder by hand, the second data set is refused, not "skipped as complete".
    with pytest.raises(RunFolderConflictError, match="another config"):
        run(compose_cfg(*_mvtec(two), run_dir=_run_dir(first)))


def test_changed_data_under_the_same_root_is_not_skipped(compose_cfg, tmp_path: Path, cache_dir) -> None:
    root = _mvtec_tree(tmp_path / "parts", cache_dir)
    cfg = compose_cfg(*_mvtec(root))
    run(compose_cfg(*_mvtec(root), run_dir=_run_dir(cfg)))
    victim = next((root / "fabric" / "train" / "good").glob("*.png"))
    shutil.copy(next((root / "fabric" / "test").rglob("*.png")), victim)  # same name, other pixels
    with pytest.raises(RunFolderConflictError, match="data has changed"):
        run(compose_cfg(*_mvtec(root), run_dir=_run_dir(cfg)))
    rerun = run(compose_cfg(*_mvtec(root), "force=true", run_dir=_run_dir(cfg)))
    assert rerun["data"]["fingerprint"]["sha256"] != ""


@pytest.mark.parametrize(
    "execution",
    [["method=patchknn"], ["torch_threads=1"], ["data.num_workers=1"], ["trainer.enable_progress_bar=false"],
     ["logger=tensorboard"], ["data.eval_batch_size=3"], ["model.feature_cache=false"], ["force=true"]],
)  # fmt: skip
def test_execution_details_keep_the_identity(compose_cfg, execution: list[str]) -> None:
    base = compose_cfg(*TINY_DATA)
    assert identity_digest(compose_cfg(*TINY_DATA, *execution)) == identity_digest(base)


@pytest.mark.parametrize(
    "change",
    [["seed=1"], ["model.k=3"], ["data.categories=[pill]"], ["data.setting=separate"], ["method=cap"],
     ["backbone.out_indices=[1,2]"], ["trainer.max_epochs=2"], ["data.batch_size=4"], ["data.source.seed=1"],
     ["callbacks.metrics.fpr_limit=0.1"], ["callbacks.metrics.spro_max_fpr=0.05"]],
)  # fmt: skip
def test_identity_changes_with_what_the_numbers_depend_on(compose_cfg, change: list[str]) -> None:
    base = compose_cfg(*TINY_DATA)
    changed = compose_cfg(*TINY_DATA, *change)
    assert identity_digest(changed) != identity_digest(base)
    assert folder_name(changed) != folder_name(base)


def test_a_key_added_later_is_left_out_of_the_identity_while_null(compose_cfg) -> None:
    """spro_max_fpr came after runs existed: at its default (null) the identity has no trace of it, so their
    digests still match and finished runs are still skipped."""
    cfg = compose_cfg(*TINY_DATA)
    assert cfg.callbacks.metrics.spro_max_fpr is None
    assert "spro_max_fpr" not in identity(cfg)["callbacks.metrics"]
    assert identity(compose_cfg(*TINY_DATA, "callbacks.metrics.spro_max_fpr=0.05"))["callbacks.metrics"]["spro_max_fpr"]


def test_a_run_folder_is_a_valid_command_line_argument(compose_cfg) -> None:
    """``data.setting=separate,...`` in a folder name broke ``ckpt_path=<folder>`` (Hydra reads a sweep)."""
    cfg = compose_cfg(*TINY_DATA, "data.setting=separate", "data.categories=[fabric,pill]", "model.k=3")
    (override,) = OverridesParser.create().parse_overrides([f"ckpt_path={_run_dir(cfg)}"])
    assert not override.is_sweep_override() and override.value() == str(_run_dir(cfg))


def test_eval_after_train_has_its_own_folder_and_never_touches_the_training_run(compose_cfg, tmp_path: Path) -> None:
    train_cfg = compose_cfg(*TINY_DATA, *FAST, "data.categories=[fabric,pill]")
    trained_dir = _run_dir(train_cfg)
    trained = run(compose_cfg(*TINY_DATA, *FAST, "data.categories=[fabric,pill]", run_dir=trained_dir))
    before = (trained_dir / "results.json").read_bytes()

    # Only the checkpoint and the eval's own change: the method, backbone and data come from the run.
    eval_cfg = compose_cfg(f"ckpt_path={trained_dir}", "data.categories=[pill]", config_name="eval")
    eval_dir = _run_dir(eval_cfg)
    assert eval_dir.parent.name == "evals" and eval_dir != trained_dir
    effective = eval_config(compose_cfg(f"ckpt_path={trained_dir}", "data.categories=[pill]", config_name="eval",
                                        run_dir=eval_dir))  # fmt: skip
    assert effective.backbone.name == "test_efficientnet" and effective.data.image_size == 32
    evaluated = run(effective, evaluate_only=True)
    assert evaluated["task"] == "eval" and evaluated["timing"]["fit_s"] is None
    assert evaluated["source"]["run_dir"] == str(trained_dir.resolve())
    assert evaluated["source"]["identity_digest"] == trained["identity"]["digest"]
    assert evaluated["metrics"]["per_category"]["pill"] == trained["metrics"]["per_category"]["pill"]
    assert (trained_dir / "results.json").read_bytes() == before

    # The training run that eval's overrides describe is a new run, trained, not skipped onto eval's numbers.
    pill_cfg = compose_cfg(*TINY_DATA, *FAST, "data.categories=[pill]")
    assert _run_dir(pill_cfg) not in (trained_dir, eval_dir)
    pill = run(compose_cfg(*TINY_DATA, *FAST, "data.categories=[pill]", run_dir=_run_dir(pill_cfg)))
    assert pill["task"] == "train" and pill["timing"]["fit_s"] is not None

    # An eval pointed at a training folder by hand is refused, even with force.
    with pytest.raises(RunFolderConflictError, match="never writes there"):
        run(eval_config(compose_cfg(f"ckpt_path={trained_dir}", config_name="eval", run_dir=trained_dir)),
            evaluate_only=True)  # fmt: skip
    assert (trained_dir / "results.json").read_bytes() == before


def test_results_record_the_identity_and_files_follow_the_umask(compose_cfg) -> None:
    import os

    cfg = compose_cfg(*TINY_DATA, *FAST, "data.categories=[fabric]")
    out = _run_dir(cfg)
    previous = os.umask(0o022)
    try:
        payload = run(compose_cfg(*TINY_DATA, *FAST, "data.categories=[fabric]", run_dir=out))
    finally:
        os.umask(previous)
    assert payload["identity"]["digest"] == identity_digest(cfg)
    assert json.loads((out / "identity.json").read_text())["digest"] == identity_digest(cfg)
    assert (out / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (out.parent / "latest").resolve() == out.resolve()
