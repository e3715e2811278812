"""Named studies: a YAML spec -> grid points -> runs, tracked as MLflow parent and child runs.

A study file (studies/NAME.yaml) holds:

    name: quickstart
    description: one paragraph
    include: [corpora/builtin.yaml]      # config pieces from configs/, applied first
    config: {...}                         # the study's own settings
    scales: {tiny: {include: [corpora/builtin_tiny.yaml], ...}, small: {grid: {...}, ...}}  # per-scale settings (optional)
    variants: {crisp+ft: {selection.method: crisp, finetune.enabled: true}, ...}   # named override sets (optional)
    grid: {task: [medical, arc_easy]}    # dotted key -> values
    exclude: [{task: arc_easy, ...}]      # grid combinations left out (optional)
    seeds: [0, 1, 2]                      # replicates (optional)
    search: {params: {train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}}}   # `crisp tune` (crisp_pl/tune.py)

Points are every variant crossed with every combination of grid values, named like
`crisp+ft,task=medical`, and, when the study has `seeds`, crossed with the seeds: the point
`crisp+ft,task=medical,seed=1` sets `train.seed` and `selection.seed` to 1 (the task split's
`task.seed` and the clustering's `cluster.seed` stay as configured, so every seed trains on the
same data split and tree). Its group, `crisp+ft,task=medical`, is its name without the seed: what
analysis averages over. Seeds are the outer loop, so a study stopped early holds whole replicates.
Stages whose cache key leaves the seed out (data, embeddings, tree, the CRISP, uniform and
specialist selections) are computed once for all seeds. A point's config is, in order: RunConfig
defaults <- configs/scales/SCALE.yaml <- includes <- config <- scales[SCALE] (its own includes
first: the pool sized for that scale; its `grid` replaces the values of grid keys at that
scale) <- variant <- grid
point <- seed <- `--set` overrides (a `--set` of a seed the study's `seeds` set is an error). A
`task: NAME` value anywhere reads the preset configs/tasks/NAME.yaml. Rerunning a study finds its parent
run by (study, scale, hash of what every point's config changes from the defaults), skips finished points and resumes the rest.
Every MLflow call goes through `tracking.Tracker`; `StudyRunner.results()` reads a study back as
DataFrames (`StudyResults`) for analysis/figures.py.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from crisp_pl.cache import StageCache, exclusive, held
from crisp_pl import workspace
from crisp_pl.config import ConfigError, RunConfig, build_run_config, config_file, load_yaml, merge, non_defaults, parse_set, stable_hash, to_dict
from crisp_pl.corpus.packages import cache_dir
from crisp_pl.distributed import is_worker
from crisp_pl.model.ladder import apply_ladder
from crisp_pl.selection import get_method
from crisp_pl.tracking import TrackedRun, Tracker, provenance

if TYPE_CHECKING:
    import pandas as pd

STUDY_KEYS = {"name", "description", "include", "config", "scales", "variants", "grid", "exclude", "seeds", "figures", "search"}
FIGURE_KEYS = {"x", "label", "log_x", "series", "tasks"}
SEED_KEYS = ("train.seed", "selection.seed")  # what a study's `seeds` set; task.seed and cluster.seed stay fixed


@dataclass
class Study:
    name: str
    description: str = ""
    include: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)
    variants: dict[str, dict] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    exclude: list[dict] = field(default_factory=list)
    """Grid combinations to leave out: a point whose grid values match every key of one entry is not run
    (e.g. `{base.steps: 0, train.max_steps: 0}`, a model trained on nothing)."""
    seeds: list[int] = field(default_factory=list)  # empty: no seed axis, points named and configured as without the key
    figures: list[dict] = field(default_factory=list)
    """Sweep figures (analysis.figures.sweep_figure): each `x` (a metric such as `data/pool_windows`, or a
    grid key), `label` (the axis title, with units), `log_x`, `series` (the column one line is drawn
    per: `variant` by default, a grid key, or a list of them: a line per combination), `tasks` (K > 1 on a
    total-cost axis: the cost of one of K tasks sharing the pool's embedding and tree)."""
    search: dict = field(default_factory=dict)
    """An Optuna search over config keys (`crisp tune NAME`; crisp_pl/tune.py documents the block)."""
    path: Path | None = None

    @property
    def ref(self) -> str:
        """How commands name this study again: its name when it is studies/NAME.yaml, else its path."""
        found = workspace.find("studies", f"{self.name}.yaml")
        return self.name if self.path is None or (found is not None and self.path.resolve() == found.resolve()) else str(self.path)

    @property
    def origin(self) -> str:
        """Where the study comes from: `workspace`, `built-in`, or its file (a study given by path)."""
        for origin, root in workspace.roots("studies"):
            if self.path is not None and self.path.resolve().parent == root.resolve():
                return origin
        return str(self.path)


@dataclass
class Point:
    name: str  # e.g. "selection.method=crisp", "crisp+ft,task=medical" or "crisp+ft,task=medical,seed=1"
    overrides: dict
    config: RunConfig
    variant: str = ""
    seed: int | None = None  # the study seed of this point (None: the study has no `seeds`)
    group: str = ""  # the name without the seed: the points analysis averages over

    def __post_init__(self):
        self.group = self.group or self.name


def load_study(name_or_path: str) -> Study:
    """A study by name (studies/NAME.yaml: the workspace's, else the built-in one) or by path; unknown keys
    are errors naming the file."""
    path = Path(name_or_path)
    if not path.suffix:
        # a study once given by path is found again by its name
        path = workspace.find("studies", f"{name_or_path}.yaml") or remembered_studies().get(name_or_path) or \
            Path("studies") / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(s.name for s in list_studies()) or "none"
        raise ConfigError(f"no study {name_or_path!r} ({path} does not exist; known studies: {known})")
    data = load_yaml(path)
    unknown = sorted(set(data) - STUDY_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(STUDY_KEYS))})")
    if "name" not in data:
        raise ConfigError(f"{path}: missing key 'name'")
    for key, values in data.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} must be a non-empty list")
    for i, entry in enumerate(data.get("exclude", [])):
        if not isinstance(entry, dict) or not entry or set(entry) - set(data.get("grid", {})):
            raise ConfigError(f"{path}: exclude[{i}] must map grid keys ({', '.join(data.get('grid', {})) or 'none'}) "
                              f"to values, got {entry!r}")
    for name, overrides in data.get("variants", {}).items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: variants.{name} must be a mapping of dotted keys to values")
    for i, figure in enumerate(data.get("figures", [])):
        if not isinstance(figure, dict) or "x" not in figure or set(figure) - FIGURE_KEYS:
            raise ConfigError(f"{path}: figures[{i}] must be a mapping with `x` and optionally "
                              f"{', '.join(sorted(FIGURE_KEYS - {'x'}))}, got {figure!r}")
    if "seeds" in data:
        seeds = data["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{path}: seeds repeat a value: {seeds}")
        overlap = [f"{where}.{key}" for where, keys in [("grid", data.get("grid", {}))]
                   + [(f"variants.{n}", o) for n, o in data.get("variants", {}).items()] for key in keys if key in SEED_KEYS]
        if overlap:
            raise ConfigError(f"{path}: {overlap[0]} is set by the study's seeds ({', '.join(SEED_KEYS)}); drop one of them")
    study = Study(**data, path=path)
    if all(path.resolve().parent != root.resolve() for _, root in workspace.roots("studies")):
        _remember(study.name, path.resolve())
    return study


REMEMBERED = "study_paths.json"  # in the user's crisp_pl cache folder: name -> path of studies given by path


def remembered_studies() -> dict[str, Path]:
    """Study name -> the file it was last loaded from, for studies outside studies/ whose file still exists."""
    registry = cache_dir() / REMEMBERED
    try:
        known = json.loads(registry.read_text())
    except (OSError, ValueError):
        return {}
    return {name: Path(p) for name, p in known.items() if Path(p).is_file()}


def _remember(name: str, path: Path) -> None:
    known = {n: str(p) for n, p in remembered_studies().items()}
    if known.get(name) == str(path):
        return
    known[name] = str(path)
    registry = cache_dir() / REMEMBERED
    try:
        registry.parent.mkdir(parents=True, exist_ok=True)
        tmp = registry.with_name(f".{REMEMBERED}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, registry)
    except OSError:
        pass  # a read-only home only loses the shortcut: the path still works


def list_studies() -> list[Study]:
    """Every study in use: the workspace's, then the built-in ones it does not shadow, by name."""
    return [load_study(str(files[0][1])) for files in workspace.entries("studies").values()]


def shadowed(study: Study) -> Path | None:
    """The built-in study file a workspace study of the same name hides, if any."""
    files = workspace.entries("studies").get(study.name, [])
    return files[1][1] if len(files) > 1 and study.origin == workspace.WORKSPACE else None


def points(study: Study, scale: str = "tiny", sets: list[str] | None = None, with_seeds: bool = False) -> list[Point]:
    """Every variant x grid point of the study at `scale`, each with its resolved, validated config.

    `with_seeds`: crossed with the study's `seeds` as well (seeds outermost): the points a run runs.
    Without it, one point per group, configured without the seed layer (what `crisp study show`
    prints). A study without `seeds` gives the same list either way."""
    scale_file = workspace.find("configs", f"scales/{scale}.yaml")
    if scale_file is None:
        raise ConfigError(f"unknown scale {scale!r} (known: {', '.join(workspace.entries('configs', 'scales'))})")
    per_scale = dict(study.scales.get(scale, {}))
    # results go to the workspace's results/ unless a layer says otherwise (a place, not part of a point's identity)
    layers = [{"results_dir": str(workspace.results_dir())}, load_yaml(scale_file)] + \
        [load_yaml(config_file(inc)) for inc in study.include] + [study.config]
    grid = {**study.grid, **per_scale.pop("grid", {})}  # a scale may give a grid key its own values (budgets in steps)
    if set(grid) != set(study.grid):
        raise ConfigError(f"{study.path}: scales.{scale}.grid sets {sorted(set(grid) - set(study.grid))}, "
                          f"which the study's grid does not have")
    layers += [load_yaml(config_file(inc)) for inc in per_scale.pop("include", [])] + [per_scale]
    keys = list(grid)
    out = []
    for seed in study.seeds if with_seeds and study.seeds else [None]:
        for variant, variant_overrides in (study.variants or {"": {}}).items():
            for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
                if any(all(dict(zip(keys, values))[k] == v for k, v in entry.items()) for entry in study.exclude):
                    continue
                assignment = [f"{k}={_yaml_value(v)}" for k, v in zip(keys, values)]
                group = ",".join(([variant] if variant else []) + assignment) or "default"
                overrides = merge(parse_set([f"{k}={_yaml_value(v)}" for k, v in variant_overrides.items()]), parse_set(assignment))
                if seed is not None:
                    overrides = merge(overrides, parse_set([f"{k}={seed}" for k in SEED_KEYS]))
                name = group if seed is None else ",".join(([variant] if variant else []) + assignment + [f"seed={seed}"])
                where = f"{study.path} point {name}"
                config = apply_ladder(build_run_config(*layers, overrides, parse_set(sets or []), where=where))
                if seed is not None and (config.train.seed, config.selection.seed) != (seed, seed):
                    raise ConfigError(f"{where}: --set overrides {' or '.join(SEED_KEYS)}, which the study's seeds set; "
                                      f"drop the --set or the study's seeds")
                try:
                    get_method(config.selection.method)  # a typo fails at plan time, not after hours of embedding
                except ConfigError as error:
                    raise ConfigError(f"{where}: {error}") from None
                out.append(Point(name, overrides, config, variant, seed, group))
    return out


def run_name(point: Point) -> str:
    """The MLflow run name: the point's values without their keys, which the runs table cuts off
    (`crisp+ft,task.train_share=0.25,seed=1` -> `crisp+ft 0.25 s1`); the full name is tag `crisp.point`."""
    values = [part.split("=", 1)[-1] for part in point.group.split(",")] if point.group != "default" else [point.group]
    return " ".join(values + ([f"s{point.seed}"] if point.seed is not None else []))


def _lookup(tree: dict, dotted: str):
    """`tree["a"]["b"]` for `a.b`; a task preset's name for `task`."""
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree["name"] if isinstance(tree, dict) and "name" in tree else tree


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@dataclass
class StudyResults:
    """What a study's figures need, read back from MLflow as plain DataFrames (no MLflow objects)."""

    runs: pd.DataFrame  # one row per finished point, in the study's point order: point, group, seed, method, task, variant,
    #                     finetune (bool), run_id, metrics
    curves: pd.DataFrame  # val/loss of every run as logged, long form: point, run_id, step, value
    histograms: dict[str, pd.DataFrame]  # CRISP group -> its histogram.csv (cluster, p_specialist, p_generalist, ...), read
    #                                      from the group's first point: the CRISP selection's key leaves the seed out
    folder: Path  # where the figures go: results/figures/STUDY-SCALE
    figures: list[dict] = field(default_factory=list)  # the study's sweep figures (Study.figures)
    description: str = ""  # the study's description: the finding it tests (the figures' index.md)
    coverage: dict[str, pd.DataFrame] = field(default_factory=dict)  # CRISP group -> its coverage.csv, where logged


STAGES_ARTIFACT = "stages.json"  # a point's stage name -> cache key (crisp inspect reads the stages back through it)
PLACE_KEYS = ("results_dir", "cache_dir", "tracking")  # where a study's results go, left out of its identity


def group_means(runs: pd.DataFrame) -> dict[str, float]:
    """`TASK/GROUP/METRIC` -> the group's mean over seeds of its test ppl and accuracy (a group's name in
    MLflow's metric alphabet: `crisp,task.train_share=0.25` -> `crisp task.train_share 0.25`)."""
    out = {}
    for (task, group), rows in runs.groupby(["task", "group"], sort=False):
        name = group.replace(",", " ").replace("=", " ").replace("+", " plus ")
        for metric in ("ppl", "acc", "acc_norm"):
            column = f"test/{task}/{metric}"
            if column in rows and rows[column].notna().any():
                out[f"{task}/{name}/{metric}"] = float(rows[column].mean())
    return out


def config_hash(point: Point) -> str:
    """The point's whole config, hashed: its child run's `crisp.config_hash` tag, by which any run of it is found."""
    return stable_hash(to_dict(point.config))


class StudyRunner:
    """Runs a study's points in order, logging each to an MLflow child run of one parent run."""

    def __init__(self, study: Study, scale: str = "tiny", sets: list[str] | None = None):
        self.study, self.scale = study, scale
        self.points = points(study, scale, sets, with_seeds=True)
        first = self.points[0].config
        self.results_dir = Path(first.results_dir)
        self._tracking, self._tracker = first.tracking, None
        identity = [non_defaults(p.config) for p in self.points]  # new fields keep old studies found
        # where the results live is not what the study is: a moved results folder finds its runs again
        self.study_hash = stable_hash([{k: v for k, v in c.items() if k not in PLACE_KEYS} for c in identity])
        self.legacy_hash = stable_hash(identity)  # the identity of studies run before it left the folder out
        self.cache = StageCache(first.cache_root)
        self.provenance = provenance()  # once: it runs git

    @property
    def tracker(self) -> Tracker:
        """The MLflow store, opened (and, the first time, created) when a command needs it."""
        if self._tracker is None:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            self._tracker = Tracker(self._tracking, self.results_dir)
        return self._tracker

    def has_store(self) -> bool:
        """Whether the MLflow store exists: commands that only read (status, figures, plan) create none."""
        return self._tracker is not None or bool(self._tracking.uri) or (self.results_dir / "mlflow.db").is_file()

    @property
    def client(self):
        """The MLflow client of the store, for looking at runs by hand (tests, notebooks)."""
        return self.tracker.client

    def parent_tags(self) -> dict[str, str]:
        return {"crisp.kind": "study", "crisp.study": self.study.name, "crisp.scale": self.scale, "crisp.study_hash": self.study_hash}

    def parent(self, create: bool) -> TrackedRun | None:
        if not create and not self.has_store():
            return None
        found = self.tracker.find_run(self.parent_tags()) or self.tracker.find_run({**self.parent_tags(), "crisp.study_hash": self.legacy_hash})
        if found is not None or not create:
            return found
        # the description is MLflow's run note (shown on the run's page); the study file is an artifact
        tags = dict(self.parent_tags(), **{"mlflow.note.content": self.study.description.strip()})
        scale_grid = self.study.scales.get(self.scale, {}).get("grid", {})  # a scale's own values, as points() takes them
        grid = {f"grid.{key}": values for key, values in {**self.study.grid, **scale_grid}.items()}
        run = self.tracker.create_run(f"{self.study.name} [{self.scale}]", tags,
                                      {"points": len(self.points), "seeds": self.study.seeds, **grid,
                                       "variants": list(self.study.variants)})
        self.tracker.client.log_dict(run.run_id, self.provenance, "provenance.json")
        if self.study.path is not None:
            self.tracker.client.log_artifact(run.run_id, str(self.study.path))
        return run

    def child(self, parent_id: str, point: Point) -> TrackedRun | None:
        return self.tracker.find_run({"crisp.parent": parent_id, "crisp.point": point.name})

    def child_tags(self, parent_id: str, point: Point) -> dict[str, str]:
        return {"crisp.kind": "point", "crisp.study": self.study.name, "crisp.scale": self.scale, "crisp.parent": parent_id,
                "crisp.point": point.name, "crisp.method": point.config.selection.method, "crisp.task": point.config.task.name,
                "crisp.variant": point.variant or point.config.selection.method,
                # the study seed (train.seed without a seeds axis) and the name without it: analysis pairs and averages by them
                "crisp.seed": str(point.config.train.seed if point.seed is None else point.seed), "crisp.group": point.group,
                "mlflow.parentRunId": parent_id, "crisp.config_hash": config_hash(point)}

    def status(self) -> list[dict]:
        """One row per point: its state in MLflow (done, running, failed, pending; `elsewhere`: finished under
        another run of this study, one with other `--seeds`, which `run` logs here from the cache; `killed`:
        running in MLflow but no process of the study is alive, a rerun resumes it), its run id, and for a
        finished point its test perplexity (`ppl`) and time (`seconds`)."""
        parent = self.parent(create=False)
        # MLflow says RUNNING until a run ends; a killed run never does. Live runs of the study hold its lock.
        live = any(held(path) for path in (self.results_dir / "locks").glob(f"{self.study.name}-*.lock"))
        rows = []
        for point in self.points:
            run = self.child(parent.run_id, point) if parent else None
            state = {"FINISHED": "done", "RUNNING": "running", "FAILED": "failed", "KILLED": "failed"}.get(run.status, "?") if run else "pending"
            if run is None and self.has_store():
                # the same point under another parent: a run of this study with other --seeds, e.g. one process a seed
                other = self.tracker.find_run({"crisp.kind": "point", "crisp.study": self.study.name, "crisp.scale": self.scale,
                                               "crisp.config_hash": config_hash(point)})
                if other is not None and other.status in ("FINISHED", "RUNNING"):
                    state, run = ("elsewhere" if other.status == "FINISHED" else "running"), other
            if state == "running" and not live:
                state = "killed"
            metrics = run.metrics if run else {}
            rows.append({"point": point.name, "state": state, "run_id": run.run_id if run else "",
                         "ppl": metrics.get(f"test/{point.config.task.name}/ppl"), "seconds": metrics.get("time/point_seconds")})
        return rows

    def run(self) -> list[dict]:
        if is_worker():
            return self._run_as_worker()
        # one process per study and results folder: a second `crisp study run` of it waits, then finds it done
        print(f"study {self.study.name} [{self.scale}]: {len(self.points)} points; results in {self.results_dir.resolve()}", flush=True)
        with exclusive(self.results_dir / "locks" / f"{self.study.name}-{self.study_hash}.lock", f"study {self.study.name}"):
            return self._run()

    def _run(self) -> list[dict]:
        # Training pulls in Lightning and torch (seconds): only `study run` pays for it, not list / status / figures.
        from crisp_pl.stages import run_point
        from crisp_pl.training.trainer import mlflow_logger

        parent_id = self.parent(create=True).run_id
        self.tracker.mark_running(parent_id)
        done = []
        for i, point in enumerate(self.points, 1):
            existing = self.child(parent_id, point)
            if existing is not None and existing.status == "FINISHED":
                print(f"[{i}/{len(self.points)}] {point.name}: done, skipped", flush=True)
                done.append({"point": point.name, "run_id": existing.run_id, "skipped": True})
                continue
            print(f"[{i}/{len(self.points)}] {point.name}", flush=True)
            if existing is None:
                run_id = self.tracker.create_run(run_name(point), self.child_tags(parent_id, point), to_dict(point.config)).run_id
            else:
                run_id = existing.run_id
                self.tracker.mark_running(run_id)
            try:
                result = run_point(point.config, self.cache, lambda prefix: mlflow_logger(self.tracker.uri, run_id, prefix))
            except BaseException:
                self.tracker.end_run(run_id, "FAILED")
                self.tracker.end_run(parent_id, "FAILED")
                raise
            self._log_result(run_id, point, result)
            done.append({"point": point.name, "run_id": run_id, "skipped": False, **result.metrics})
        self.tracker.end_run(parent_id, "FINISHED")
        return done

    def _run_as_worker(self) -> list[dict]:
        """A rank > 0 of a multi-process run: every point's stages in rank 0's order, joining the training
        stages and waiting in the cache for the rest; nothing goes to MLflow (rank 0 logs each point)."""
        from crisp_pl.stages import run_point

        for point in self.points:
            run_point(point.config, self.cache)
        return []

    def _log_result(self, run_id: str, point: Point, result) -> None:
        tags = {"crisp.checkpoint": str(result.artifacts.get("checkpoint", ""))}  # checkpoints stay in the cache; the tag says where
        artifacts = [path for name, path in result.artifacts.items() if name != "checkpoint"]
        # the stages' cache keys and the code's provenance are one artifact each, not tags that bury the useful ones
        documents = {"config.yaml": yaml.safe_dump(to_dict(point.config), sort_keys=False),
                     STAGES_ARTIFACT: json.dumps(result.keys, indent=1), "provenance.json": json.dumps(self.provenance, indent=1)}
        self.tracker.log_point(run_id, result.metrics, tags, documents, artifacts)
        for prefix, path in result.curves.items():  # Lightning's logger joins a prefix with "-"
            if path.is_file():  # stages trained before curves were kept have none
                for key, points in json.loads(path.read_text()).items():
                    self.tracker.backfill_curve(run_id, f"{prefix}-{key}" if prefix else key, points)
        self.tracker.end_run(run_id, "FINISHED")

    def attach_figures(self, folder: Path, runs: pd.DataFrame | None = None) -> None:
        """The study's figures and tables as artifacts of its parent run (`figures/`), beside the study file,
        and each group's mean test metrics over seeds as the parent's metrics (`TASK/GROUP/ppl`), so the
        parent run alone says what the study found."""
        parent = self.parent(create=False)
        if parent is None:
            return
        if folder.is_dir():
            self.tracker.client.log_artifacts(parent.run_id, str(folder), "figures")
        if runs is not None:
            self.tracker.log_summary(parent.run_id, group_means(runs))

    def results(self) -> StudyResults:
        """The finished points of this study's parent run, their val/loss curves and CRISP histograms, for figures."""
        parent = self.parent(create=False)
        if parent is None:
            raise LookupError(f"study {self.study.name} [{self.scale}] has no runs with this config in {self.results_dir}; "
                              f"run it first (crisp study run {self.study.ref} --scale {self.scale})")
        order = {p.name: i for i, p in enumerate(self.points)}
        runs = self.tracker.finished_children(parent.run_id)
        if runs.empty:
            raise LookupError(f"study {self.study.name} [{self.scale}] has no finished points yet in {self.tracker.uri}; "
                              f"run it (crisp study run {self.study.ref} --scale {self.scale})")
        runs = runs.sort_values("point", key=lambda s: s.map(order)).reset_index(drop=True)
        for key in self.study.grid:  # each grid key's value, a column a sweep figure can draw against
            values = {p.name: _lookup(to_dict(p.config), key) for p in self.points}
            runs[key] = runs["point"].map(lambda name: values.get(name))
        curves = self.tracker.metric_history(runs["run_id"], "val/loss")
        curves.insert(0, "point", curves["run_id"].map(dict(zip(runs["run_id"], runs["point"]))))
        crisp = runs[runs["method"].isin(["crisp", "crisp_auto"])].drop_duplicates("group")
        histograms = {row.group: self.tracker.read_csv_artifact(row.run_id, "histogram.csv") for row in crisp.itertuples()}
        coverage = {row.group: self.tracker.read_csv_artifact(row.run_id, "coverage.csv") for row in crisp.itertuples()
                    if self.tracker.has_artifact(row.run_id, "coverage.csv")}  # runs logged before the diagnostic have none
        return StudyResults(runs, curves, histograms, self.results_dir / "figures" / f"{self.study.name}-{self.scale}",
                            self.study.figures, self.study.description, coverage)
