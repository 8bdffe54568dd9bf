"""``hydra/sweeper=optuna``: a TPE search that scores trials on the validation split and tests only its result.

The search is honest by construction:

* every trial runs with ``search.objective`` set, so the engine withholds the test split (it is not built, read,
  hashed or scored) and returns the objective measured on the validation split (:mod:`adzoo.search.objective`);
* when the trials are done, the best trial's config gets one test run (``search.tuned`` records where it came
  from, and the leaderboard tags its row "tuned on validation (N trials)"), and with ``compare_default`` so does
  the untuned config, in the same sweep folder, so the leaderboard shows both;
* the study lives in SQLite inside the sweep folder: a killed search resumes, keeps its finished trials, reruns
  the one it was in (its run folder skips finished work) and runs only the rest.

Mistakes are refused before any trial: a searched key that is not in the composed config, an objective that
names a test metric, and a storage file that holds a study of another search space.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig
from optuna.trial import TrialState

from adzoo.errors import ConfigError
from adzoo.search.objective import SEARCH_FILE, check_objective
from adzoo.search.space import check_keys, override_text, parse_space, space_signature
from adzoo.utils.io import atomic_write_json, run_lock

log = logging.getLogger("adzoo")

SPACE_ATTR = "adzoo_search_space"  # the study's user attribute that a resumed search must match
INTERRUPTED = "interrupted"  # user attribute of a trial whose process died: it does not count, and is rerun


class OptunaSearch:
    """Hydra's sweeper interface over an Optuna study (``conf/hydra/sweeper/optuna.yaml`` lists the options);
    ``hydra_plugins.adzoo_optuna_sweeper`` is the entry point Hydra finds."""

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str = "adzoo",
        n_trials: int = 8,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        compare_default: bool = True,
        params: DictConfig | dict[str, Any] | None = None,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction!r}: expected maximize or minimize")
        if int(n_trials) < 1 or int(n_jobs) < 1:
            raise ConfigError(f"hydra.sweeper: n_trials={n_trials} and n_jobs={n_jobs} must be >= 1")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: expected a fraction in [0, 1]")
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = str(study_name)
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failure_rate = float(max_failure_rate)
        self.compare_default = bool(compare_default)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # -- checks before any trial ------------------------------------------------------------------------------
    def _composed(self, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _study(self, signature: str) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            direction=self.direction,
            load_if_exists=True,
        )
        stored = study.user_attrs.get(SPACE_ATTR)
        if stored is None and study.trials:
            stored = "(none recorded)"
        if stored is not None and stored != signature:
            raise ConfigError(
                f"storage {self.storage} holds study {self.study_name!r} of another search space: stored "
                f"{stored}; this search {signature} (choose another sweep_name or hydra.sweeper.study_name)"
            )
        study.set_user_attr(SPACE_ATTR, signature)
        return study

    # -- the search ---------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        space, fixed = parse_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        if not space:
            raise ConfigError("hydra.sweeper.params: the search space is empty (see conf/hparams_search/)")
        fixed_overrides = [f"{k}={v}" for k, v in fixed.items()]
        base = self._composed(fixed_overrides)
        check_keys(list(space), base)
        objective = base.get("search", {}).get("objective")
        if objective is None:
            raise ConfigError("a search needs search.objective (a validation metric, e.g. val_image_auroc)")
        data = base.get("data") or {}
        objective = check_objective(objective, float(data.get("val_fraction", 0)), str(data.get("val_anomalies")))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(sweep_dir):  # one search per folder: a RUNNING trial in its storage is then a dead one's
            study = self._study(space_signature(space, objective, self.direction))
            done = self._recover(study)
            log.info(
                "search %s: %s %s over %s, %d of %d trials done, storage %s",
                self.study_name, self.direction, objective, ", ".join(space), done, self.n_trials, self.storage,
            )  # fmt: skip
            returns = self._run_trials(study, space, fixed_overrides, self.n_trials - done)
            returns.append(self._test_runs(study, fixed_overrides, objective, len(study.trials)))
            write_summary(study, sweep_dir / SEARCH_FILE, objective, self.n_trials)
        return returns

    def _recover(self, study: optuna.Study) -> int:
        """Trials a dead search left running are marked failed (not counted) and queued again with their params,
        so the rerun repeats exactly the interrupted trial; returns the trials that count as done."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            log.info("search: trial %d was interrupted; it runs again", trial.number)
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(1 for t in study.get_trials(deepcopy=False, states=finished) if not t.user_attrs.get(INTERRUPTED))

    def _run_trials(
        self, study: optuna.Study, space: dict[str, Any], fixed: list[str], to_go: int
    ) -> list[Sequence[JobReturn]]:
        returns: list[Sequence[JobReturn]] = []
        failures = trials_run = 0
        while to_go > 0:
            batch = [study.ask(space) for _ in range(min(self.n_jobs, to_go))]
            overrides = [tuple(fixed + [override_text(k, v) for k, v in t.params.items()]) for t in batch]
            started = time.perf_counter()
            results = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
            for trial, result in zip(batch, results):
                value, error = _value(result)
                with contextlib.suppress(Exception):
                    trial.set_user_attr("run_dir", str(result.hydra_cfg.hydra.runtime.output_dir))
                trial.set_user_attr("seconds", (time.perf_counter() - started) / len(batch))
                if error is None:
                    study.tell(trial, value)
                    log.info("search: trial %d %s → %.6g", trial.number, trial.params, value)
                else:
                    failures += 1
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("search: trial %d %s failed: %s", trial.number, trial.params, error)
            returns.append(results)
            trials_run += len(batch)
            to_go -= len(batch)
            if failures / trials_run > self.max_failure_rate:
                raise ConfigError(
                    f"search: {failures} of {trials_run} trials failed (hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}); the log above says why; a rerun resumes after the finished trials"
                )
        return returns

    def _test_runs(self, study: optuna.Study, fixed: list[str], objective: str, trials: int) -> Sequence[JobReturn]:
        """The best config's test run (and the untuned config's): the only runs of a search that read test data."""
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise ConfigError("search: no trial finished, so there is no best config to test")
        best = study.best_trial
        tuned = (
            f"search.tuned={{study:{self.study_name},trials:{len(complete)},objective:{objective},"
            f"best_value:{best.value!r},trial:{best.number}}}"
        )
        jobs = [tuple([*fixed, *(override_text(k, v) for k, v in best.params.items()), "search.objective=null", tuned])]
        if self.compare_default:
            jobs.append(tuple([*fixed, "search.objective=null"]))
        log.info("search: best trial %d (%s = %.6g) %s; testing it", best.number, objective, best.value, best.params)
        results = self.launcher.launch(jobs, initial_job_idx=trials)
        for result in results:
            if result.status != JobStatus.COMPLETED:
                _value(result)  # raises the job's own error: a failed test run is not a finished search
        study.set_user_attr("test_runs", [str(r.hydra_cfg.hydra.runtime.output_dir) for r in results])
        return results


def _value(result: JobReturn) -> tuple[float, str | None]:
    """A trial's objective, or why there is none (its error, or a value that is not a finite number)."""
    if result.status != JobStatus.COMPLETED:
        error = result._return_value
        return math.nan, f"{type(error).__name__}: {error}"
    value = result.return_value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan, f"the task returned {value!r}, not a number"
    return (number, None) if math.isfinite(number) else (number, f"the objective is {number}")


def write_summary(study: optuna.Study, path: Path, objective: str, n_trials: int) -> dict[str, Any]:
    """``search.json``: every trial (params, value, state, run folder), the best one, the parameter importances
    (Optuna's fANOVA, once two trials have finished) and the test runs, written atomically."""
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "run_dir": t.user_attrs.get("run_dir"),
            "seconds": t.user_attrs.get("seconds"),
            "interrupted": bool(t.user_attrs.get(INTERRUPTED)),
        }
        for t in study.trials
    ]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        with contextlib.suppress(Exception):  # fANOVA needs variation; a flat history has no importances
            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    best = study.best_trial if complete else None
    summary = {
        "study": study.study_name,
        "objective": objective,
        "direction": study.direction.name.lower(),
        "n_trials": n_trials,
        "complete": len(complete),
        "space": json.loads(study.user_attrs.get(SPACE_ATTR, "{}")),
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
        "importances": importances,
        "trials": trials,
        "test_runs": study.user_attrs.get("test_runs", []),
    }
    atomic_write_json(path, summary)
    return summary
