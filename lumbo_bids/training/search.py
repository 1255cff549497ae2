"""Fine-tuning parameter search with subject-wise k-fold cross-validation.

A search spec (JSON) lists the values to try for each fine-tuning choice; every combination
(a grid, optionally capped by ``max_trials``) is one trial, and every trial is trained and
evaluated on the **same** subject-wise folds (never a patch- or image-level split), with fixed
seeds. Trials run one after another here, or on a Ray cluster through Ray Tune (one trial per
GPU, ASHA early stopping after each fold) when a Ray address is given; Ray stays optional and
is imported only then.

Spec example::

    {"folds": 3, "seed": 42, "steps_per_epoch": 50,
     "space": {"learning_rate": [1e-4, 3e-4], "epochs": [10, 20], "freeze": ["none", "encoder"],
               "augmentation": [0.5, 1.0], "loss": ["dice", "dice_bce"], "patch_size": [[48, 48, 48]],
               "init_model": ["shipped"]}}
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, LumboError, MissingInputError, UsageError

LOGGER = logging.getLogger("lumbo_bids.search")

#: Search-space keys and the values each accepts.
SPACE_KEYS = {
    "learning_rate": lambda v: isinstance(v, (int, float)) and v > 0,
    "epochs": lambda v: isinstance(v, int) and v > 0,
    "freeze": lambda v: v in ("none", "encoder", "all_but_last"),
    "augmentation": lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
    "loss": lambda v: v in ("dice", "dice_bce"),
    "patch_size": lambda v: isinstance(v, list) and len(v) == 3 and all(isinstance(s, int) and s > 0 for s in v),
    "init_model": lambda v: isinstance(v, str) and bool(v),
}
DEFAULTS = {
    "learning_rate": 1e-4, "epochs": 10, "freeze": "none", "augmentation": 1.0, "loss": "dice",
    "patch_size": [48, 48, 48], "init_model": "shipped",
}  # fmt: skip


@dataclass
class SearchSpec:
    space: dict[str, list]
    folds: int = 3
    seed: int = 42
    steps_per_epoch: int = 50
    batch_size: int = 4
    max_trials: int | None = None
    source: str = "spec"

    def trials(self) -> list[dict[str, Any]]:
        """Every combination of the space's values (grid order), each completed with defaults."""
        keys = sorted(self.space)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.space[k] for k in keys))]
        if self.max_trials is not None:
            combos = combos[: self.max_trials]
        return [{**DEFAULTS, **combo} for combo in combos]


def load_search_spec(path: Path) -> SearchSpec:
    """Read and check a spec file; every problem is one line naming the file."""
    if not Path(path).is_file():
        raise MissingInputError(f"{path}: no such file")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("space"), dict) or not data["space"]:
        raise UsageError(f"{path}: needs a non-empty object 'space'")
    for key, values in data["space"].items():
        if key not in SPACE_KEYS:
            raise UsageError(f"{path}: unknown parameter '{key}' (known: {', '.join(SPACE_KEYS)})")
        if not isinstance(values, list) or not values or not all(SPACE_KEYS[key](v) for v in values):
            raise UsageError(f"{path}: 'space.{key}' must be a non-empty list of valid values")
    folds = data.get("folds", 3)
    if not isinstance(folds, int) or folds < 2:
        raise UsageError(f"{path}: 'folds' must be an integer >= 2")
    extra = set(data) - {"space", "folds", "seed", "steps_per_epoch", "batch_size", "max_trials"}
    if extra:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(extra))}")
    return SearchSpec(
        space=data["space"], folds=folds, seed=int(data.get("seed", 42)),
        steps_per_epoch=int(data.get("steps_per_epoch", 50)), batch_size=int(data.get("batch_size", 4)),
        max_trials=data.get("max_trials"), source=str(path),
    )  # fmt: skip


def subject_folds(subjects: list[str], k: int, seed: int) -> list[list[str]]:
    """``k`` disjoint validation sets covering every subject once (shuffled with ``seed``)."""
    subjects = sorted(set(subjects))
    if len(subjects) < k:
        raise InvalidInputError(
            f"{k}-fold cross-validation needs at least {k} subjects with manual masks; found {len(subjects)} "
            f"({', '.join(subjects)})",
        )
    order = np.random.default_rng(seed).permutation(len(subjects))
    return [sorted(subjects[i] for i in order[f::k]) for f in range(k)]


@dataclass
class TrialResult:
    trial: int
    params: dict[str, Any]
    fold_dice: list[float]
    seconds: float
    folds: list[list[str]] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.fold_dice)) if self.fold_dice else float("nan")


#: ``run_fold(params, train_subjects, val_subjects, fold_index) -> mean validation Dice``
FoldRunner = Callable[[dict, list, list, int], float]


def run_trial(params: dict, folds: list[list[str]], subjects: list[str], run_fold: FoldRunner, report=None) -> list[float]:
    """Train and evaluate one parameter set on every fold; ``report(fold, dice)`` after each."""
    scores = []
    for f, val in enumerate(folds):
        train = [s for s in subjects if s not in val]
        scores.append(float(run_fold(params, train, val, f)))
        if report is not None:
            report(f, scores)
    return scores


def run_search_local(spec: SearchSpec, subjects: list[str], run_fold: FoldRunner) -> list[TrialResult]:
    """Every trial, one after another, on this machine."""
    folds = subject_folds(subjects, spec.folds, spec.seed)
    results = []
    trials = spec.trials()
    for i, params in enumerate(trials):
        LOGGER.info("search: trial %d/%d %s", i + 1, len(trials), json.dumps(params))
        started = time.time()
        scores = run_trial(params, folds, sorted(set(subjects)), run_fold)
        results.append(TrialResult(i, params, scores, time.time() - started, folds))
        LOGGER.info("search: trial %d mean Dice %.4f (folds %s)", i + 1, results[-1].mean_dice, scores)
    return results


def run_search_ray(
    spec: SearchSpec, subjects: list[str], run_fold: FoldRunner, address: str, storage: Path, gpus_per_trial: float | None = None
) -> list[TrialResult]:
    """Every trial through Ray Tune on the cluster at ``address`` (ASHA stops bad trials early)."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError:
        raise LumboError("Ray is not installed: pip install 'lumbo_bids[ray]'") from None
    folds = subject_folds(subjects, spec.folds, spec.seed)
    trials = spec.trials()
    ordered = sorted(set(subjects))

    def trainable(config):
        started = time.time()
        params = trials[config["trial"]]

        def report(fold, scores):
            tune.report({"mean_dice": float(np.mean(scores)), "fold": fold + 1, "fold_dice": list(scores),
                         "seconds": time.time() - started})  # fmt: skip

        run_trial(params, folds, ordered, run_fold, report)

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    if gpus_per_trial is None:  # one trial per GPU where the cluster has GPUs
        gpus_per_trial = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    scheduler = ASHAScheduler(time_attr="fold", metric="mean_dice", mode="max", max_t=spec.folds, grace_period=1)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1, "gpu": gpus_per_trial}),
        param_space={"trial": tune.grid_search(list(range(len(trials))))},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1),
        run_config=tune.RunConfig(storage_path=str(Path(storage).absolute()), name="search", verbose=1),
    )
    grid = tuner.fit()
    results = []
    for res in grid:
        if res.metrics is None or "trial" not in (res.config or {}):
            continue
        i = res.config["trial"]
        results.append(
            TrialResult(i, trials[i], list(res.metrics.get("fold_dice", [])), float(res.metrics.get("seconds", 0.0)), folds)
        )
    return sorted(results, key=lambda r: r.trial)
