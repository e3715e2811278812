"""Optuna searches over a study's `search:` block, tracked in the study's own MLflow store.

    search:
      variant: crisp                    # the study variant the search starts from (optional)
      params:                           # dotted config key -> its range
        selection.smoothing: {low: 0.0, high: 4.0}
        cluster.level: {choices: [0, 1]}
        train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}
      metric: val/loss                  # what is minimized (default); or any metric a point logs
      pruning: true                     # stop hopeless trials at their validation checks (default)
      seed: 0                           # the sampler's seed

A trial is one point: the study's config at the scale, the variant, the first grid value of every
grid key, `--set`s, then the trial's values. A searched key that is also a grid key leaves the tuned
study's grid (its variant keeps the first grid value, its tuned copy the best). `val/loss` is the final model's loss on the specialist
validation windows (the ones training validates on), so a search never looks at the test set.

`crisp tune NAME --trials N` runs until N trials are done (complete or pruned) in the Optuna
storage `results/optuna.db`; a killed search resumes there: the trial it was in is marked failed
and its values are tried again first. Each trial is an MLflow run nested under the search's parent
run. The best trial's values become a variant `VARIANT+tuned` of a study file written to
`results/tuned/NAME-SCALE.yaml`, which `crisp study run` takes as it is (a copy of the study with
the variant and its tuned copy); the search's history and parameter importances are drawn with
Optuna's matplotlib module under `results/figures/NAME-SCALE/search/`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crisp_pl.config import ConfigError, stable_hash, to_dict
from crisp_pl.study import Point, Study, StudyRunner, _yaml_value, points

SEARCH_KEYS = {"variant", "params", "metric", "pruning", "seed"}
RANGE_KEYS = {"low", "high", "log", "step", "choices"}


@dataclass
class Search:
    params: dict[str, dict]
    variant: str = ""
    metric: str = "val/loss"
    pruning: bool = True
    seed: int = 0

    @classmethod
    def of(cls, study: Study) -> "Search":
        """The study's `search` block, checked: every error names `search.KEY` and the study file."""
        where = f"{study.path}: search"
        data = study.search
        if not data:
            raise ConfigError(f"{study.path}: no `search` block to tune (see crisp_pl/tune.py)")
        unknown = sorted(set(data) - SEARCH_KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(SEARCH_KEYS))})")
        if not isinstance(data.get("params"), dict) or not data["params"]:
            raise ConfigError(f"{where}.params: expected a mapping of dotted config keys to ranges")
        for key, spec in data["params"].items():
            if not isinstance(spec, dict) or set(spec) - RANGE_KEYS or not ("choices" in spec or {"low", "high"} <= set(spec)):
                raise ConfigError(f"{where}.params.{key}: expected {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}")
            if "choices" not in spec and not spec["low"] < spec["high"]:
                raise ConfigError(f"{where}.params.{key}: low must be below high, got {spec!r}")
        variant = data.get("variant", "")
        if variant and variant not in study.variants:
            raise ConfigError(f"{where}.variant: no variant {variant!r} (variants: {', '.join(study.variants) or 'none'})")
        return cls(dict(data["params"]), variant, data.get("metric", "val/loss"), bool(data.get("pruning", True)),
                   int(data.get("seed", 0)))

    def suggest(self, trial) -> dict:
        """The trial's value of every searched key (dotted key -> value)."""
        values = {}
        for key, spec in self.params.items():
            if "choices" in spec:
                values[key] = trial.suggest_categorical(key, spec["choices"])
            elif all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("low", "high")) and not spec.get("log"):
                values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
            else:
                values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                                  step=spec.get("step"))
        return values


@dataclass
class Tuner:
    """One search of one study at one scale (the module docstring)."""

    study: Study
    scale: str = "tiny"
    sets: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.search = Search.of(self.study)
        scale_grid = self.study.scales.get(self.scale, {}).get("grid", {})
        first = {k: scale_grid.get(k, values)[:1] for k, values in self.study.grid.items()}  # a search tunes one point
        variants = {self.search.variant: self.study.variants[self.search.variant]} if self.search.variant else {}
        scales = {s: {k: v for k, v in layer.items() if k != "grid"} for s, layer in self.study.scales.items()}
        self.base_study = dataclasses.replace(self.study, grid=first, seeds=[], variants=variants, scales=scales)
        self.runner = StudyRunner(self.base_study, self.scale, self.sets)
        self.results_dir = self.runner.results_dir
        self.name = f"{self.study.name}-{self.scale}"

    def point(self, values: dict) -> Point:
        sets = self.sets + [f"{k}={_yaml_value(v)}" for k, v in values.items()]
        return points(self.base_study, self.scale, sets)[0]

    def run(self, trials: int) -> "optuna.Study":  # noqa: F821
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{self.results_dir.resolve() / 'optuna.db'}"
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if self.search.pruning else optuna.pruners.NopPruner()
        search = optuna.create_study(study_name=self.name, storage=storage, direction="minimize", load_if_exists=True,
                                     sampler=optuna.samplers.TPESampler(seed=self.search.seed), pruner=pruner)
        parent = self._parent()
        self._retry_killed(search, parent)
        while (done := _done(search)) < trials:
            print(f"[trial {done + 1}/{trials}] {self.name}", flush=True)
            search.optimize(lambda trial: self._objective(trial, parent), n_trials=1, catch=())
        self._write_tuned(search)
        return search

    def _retry_killed(self, search, parent: str) -> None:
        """A trial still RUNNING in the storage belongs to a killed search (one search runs at a time):
        fail it, and its MLflow run, and try its values again first."""
        import optuna

        for trial in search.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            search._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            search.enqueue_trial(trial.params, skip_if_exists=True)
            run = self.runner.tracker.find_run({"crisp.parent": parent, "crisp.trial": str(trial.number)})
            if run is not None and run.status == "RUNNING":
                self.runner.tracker.end_run(run.run_id, "FAILED")
            print(f"trial {trial.number} was killed; its values are tried again", flush=True)

    def _parent(self) -> str:
        tags = {"crisp.kind": "search", "crisp.study": self.study.name, "crisp.scale": self.scale,
                "crisp.search_hash": stable_hash([self.study.search, self.sets])}
        found = self.runner.tracker.find_run(tags)
        if found is not None:
            return found.run_id
        run = self.runner.tracker.create_run(f"{self.study.name} search [{self.scale}]", tags, {"search": self.study.search})
        self.runner.tracker.client.log_dict(run.run_id, self.runner.provenance, "provenance.json")
        return run.run_id

    def _objective(self, trial, parent: str) -> float:
        import optuna

        from crisp_pl.stages import run_point
        from crisp_pl.training.pruning import PruneOnValidation
        from crisp_pl.training.trainer import mlflow_logger

        values = self.search.suggest(trial)
        point = self.point(values)
        tracker = self.runner.tracker
        tags = {"crisp.kind": "trial", "crisp.study": self.study.name, "crisp.scale": self.scale, "crisp.parent": parent,
                "mlflow.parentRunId": parent, "crisp.trial": str(trial.number), "crisp.variant": self.search.variant or "default",
                "crisp.method": point.config.selection.method, "crisp.task": point.config.task.name}
        run_id = tracker.create_run(f"trial {trial.number}", tags, to_dict(point.config)).run_id
        callbacks = [PruneOnValidation(trial)] if self.search.pruning else []
        try:
            result = run_point(point.config, self.runner.cache, lambda prefix: mlflow_logger(tracker.uri, run_id, prefix), callbacks)
            metrics = dict(result.metrics)
            if self.search.metric == "val/loss":
                metrics["val/loss"] = final_validation_loss(point.config, self.runner.cache, result.artifacts["checkpoint"])
            if self.search.metric not in metrics:
                raise ConfigError(f"{self.study.path}: search.metric {self.search.metric!r} is not a metric of the point "
                                  f"(e.g. {', '.join(sorted(metrics)[:6])})")
        except optuna.TrialPruned:
            tracker.end_run(run_id, "KILLED")  # MLflow's word for a run stopped on purpose
            raise
        except BaseException:
            tracker.end_run(run_id, "FAILED")
            raise
        tracker.log_point(run_id, metrics, {"crisp.state": "complete"}, {"config.yaml": yaml.safe_dump(to_dict(point.config), sort_keys=False)}, [])
        tracker.end_run(run_id, "FINISHED")
        return float(metrics[self.search.metric])

    def _write_tuned(self, search) -> Path | None:
        """The study with the searched variant and its tuned copy (the best trial's values), and the figures."""
        import optuna

        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in search.trials):
            return None
        variant = self.search.variant or "default"
        # a searched grid key leaves the grid: the variant keeps the value the search started from
        swept = [k for k in self.search.params if k in self.study.grid]
        overrides = {**self.study.variants.get(self.search.variant, {}), **{k: self.base_study.grid[k][0] for k in swept}}
        tuned = {**overrides, **search.best_params}
        data = {k: v for k, v in dataclasses.asdict(self.study).items() if k not in ("path", "search") and v}
        data["grid"] = {k: v for k, v in self.study.grid.items() if k not in swept}
        data["scales"] = {s: dict(layer, grid={k: v for k, v in layer.get("grid", {}).items() if k not in swept})
                          for s, layer in self.study.scales.items()}
        data.update(name=f"{self.study.name}_tuned", variants={variant: overrides, f"{variant}+tuned": tuned},
                    description=f"{self.study.description.strip()} Tuned: the best of {len(search.trials)} trials of "
                                f"`crisp tune {self.study.name}` ({self.search.metric} {search.best_value:.4f}).")
        path = self.results_dir / "tuned" / f"{self.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(yaml.safe_dump(data, sort_keys=False))
        partial.replace(path)
        print(f"best trial {search.best_trial.number}: {self.search.metric} {search.best_value:.4f} with {search.best_params}\n"
              f"tuned study: {path} (crisp study run {path})", flush=True)
        for figure in draw_search(search, self.results_dir / "figures" / self.name / "search"):
            print(figure, flush=True)
        return path


def _done(search) -> int:
    import optuna

    return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in search.trials)


def final_validation_loss(cfg, cache, checkpoint: Path) -> float:
    """The trained model's loss on the specialist validation windows training validated on."""
    from crisp_pl.evaluate.perplexity import perplexity
    from crisp_pl.model.checkpoint import load_gpt
    from crisp_pl.stages import prepare
    from crisp_pl.stages.training import validation_windows

    windows = validation_windows(cfg, prepare(cache, cfg))
    if windows is None:
        raise ConfigError("search.metric val/loss needs specialist validation windows (task.validation_fraction > 0)")
    return perplexity(load_gpt(checkpoint), windows, cfg.eval.batch_size, desc="validation")["loss"]


def draw_search(search, folder: Path) -> list[Path]:
    """Optuna's optimization history and (with two complete trials or more) parameter importances, PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    from analysis.figures import save_figure

    folder.mkdir(parents=True, exist_ok=True)
    drawn = [("history", plots.plot_optimization_history)]
    complete = [t for t in search.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
        drawn.append(("importances", plots.plot_param_importances))
    out = []
    for name, plot in drawn:
        axes = plot(search)
        out += save_figure(axes.figure, folder / name)
    return out

