"""Named studies: a YAML spec -> grid points -> runs, tracked as MLflow parent and child runs.

A study file (studies/NAME.yaml) holds:

    name: quickstart
    description: one paragraph
    include: [corpora/builtin.yaml]      # config pieces from configs/, applied first
    config: {...}                         # the study's own settings
    scales: {tiny: {...}, small: {...}}  # per-scale settings of this study (optional)
    variants: {crisp+ft: {selection.method: crisp, finetune.enabled: true}, ...}   # named override sets (optional)
    grid: {task: [medical, arc_easy]}    # dotted key -> values

Points are every variant crossed with every combination of grid values, named like
`crisp+ft,task=medical`. A point's config is, in order: RunConfig defaults <-
configs/scales/SCALE.yaml <- includes <- config <- scales[SCALE] <- variant <- grid point <-
`--set` overrides. A `task: NAME` value anywhere reads the preset configs/tasks/NAME.yaml. Rerunning a study finds its parent
run by (study, scale, hash of every point's config), skips finished points and resumes the rest.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crisp_pl.cache import StageCache
from crisp_pl.config import ConfigError, RunConfig, build_run_config, load_yaml, merge, parse_set, stable_hash, to_dict
from crisp_pl.tracking import experiment_id, find_run, provenance, tracking_uri

ROOT = Path(__file__).resolve().parent.parent
STUDIES_DIR = ROOT / "studies"
CONFIGS_DIR = ROOT / "configs"
STUDY_KEYS = {"name", "description", "include", "config", "scales", "variants", "grid"}


@dataclass
class Study:
    name: str
    description: str = ""
    include: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)
    variants: dict[str, dict] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class Point:
    name: str  # e.g. "selection.method=crisp" or "crisp+ft,task=medical"
    overrides: dict
    config: RunConfig
    variant: str = ""


def load_study(name_or_path: str) -> Study:
    """A study by name (studies/NAME.yaml) or by path; unknown keys are errors naming the file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES_DIR / f"{name_or_path}.yaml"
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
    for name, overrides in data.get("variants", {}).items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: variants.{name} must be a mapping of dotted keys to values")
    return Study(**data, path=path)


def list_studies() -> list[Study]:
    return [load_study(str(p)) for p in sorted(STUDIES_DIR.glob("*.yaml"))]


def points(study: Study, scale: str = "tiny", sets: list[str] | None = None) -> list[Point]:
    """Every grid point of the study at `scale`, each with its resolved, validated config."""
    scale_file = CONFIGS_DIR / "scales" / f"{scale}.yaml"
    if not scale_file.is_file():
        known = ", ".join(p.stem for p in sorted((CONFIGS_DIR / "scales").glob("*.yaml")))
        raise ConfigError(f"unknown scale {scale!r} (known: {known})")
    layers = [load_yaml(scale_file)] + [load_yaml(CONFIGS_DIR / inc) for inc in study.include]
    layers += [study.config, study.scales.get(scale, {})]
    keys = list(study.grid)
    out = []
    for variant, variant_overrides in (study.variants or {"": {}}).items():
        for values in itertools.product(*(study.grid[k] for k in keys)) if keys else [()]:
            assignment = [f"{k}={_yaml_value(v)}" for k, v in zip(keys, values)]
            name = ",".join(([variant] if variant else []) + assignment) or "default"
            overrides = merge(parse_set([f"{k}={_yaml_value(v)}" for k, v in variant_overrides.items()]), parse_set(assignment))
            config = build_run_config(*layers, overrides, parse_set(sets or []), where=f"{study.path} point {name}")
            out.append(Point(name, overrides, config, variant))
    return out


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = str(value)[:500]
    return out


class StudyRunner:
    """Runs a study's points in order, logging each to an MLflow child run of one parent run."""

    def __init__(self, study: Study, scale: str = "tiny", sets: list[str] | None = None):
        from mlflow.tracking import MlflowClient

        self.study, self.scale = study, scale
        self.points = points(study, scale, sets)
        first = self.points[0].config
        self.results_dir = Path(first.results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.uri = tracking_uri(first.tracking, self.results_dir)
        self.client = MlflowClient(self.uri)
        self.experiment = experiment_id(self.client, first.tracking.experiment, self.results_dir)
        self.study_hash = stable_hash([to_dict(p.config) for p in self.points])
        self.cache = StageCache(self.results_dir / "cache")
        self.provenance = {f"provenance.{k}": v for k, v in provenance().items()}  # once: it runs git

    def parent_tags(self) -> dict[str, str]:
        return {"crisp.kind": "study", "crisp.study": self.study.name, "crisp.scale": self.scale, "crisp.study_hash": self.study_hash}

    def parent(self, create: bool):
        found = find_run(self.client, self.experiment, self.parent_tags())
        if found is not None or not create:
            return found
        tags = dict(self.parent_tags(), **self.provenance)
        run = self.client.create_run(self.experiment, run_name=f"{self.study.name} [{self.scale}]", tags=tags)
        self.client.log_param(run.info.run_id, "points", len(self.points))
        return run

    def child(self, parent_id: str, point: Point):
        return find_run(self.client, self.experiment, {"crisp.parent": parent_id, "crisp.point": point.name})

    def status(self) -> list[dict]:
        """One row per point: its state in MLflow (done, running, failed, pending)."""
        parent = self.parent(create=False)
        rows = []
        for point in self.points:
            run = self.child(parent.info.run_id, point) if parent else None
            state = {"FINISHED": "done", "RUNNING": "running", "FAILED": "failed", "KILLED": "failed"}.get(run.info.status, "?") if run else "pending"
            rows.append({"point": point.name, "state": state, "run_id": run.info.run_id if run else ""})
        return rows

    def run(self) -> list[dict]:
        from lightning.pytorch.loggers import MLFlowLogger
        from mlflow.entities import Metric, Param, RunTag

        from crisp_pl.pipeline import run_point

        parent = self.parent(create=True)
        parent_id = parent.info.run_id
        self.client.update_run(parent_id, "RUNNING")
        done = []
        for i, point in enumerate(self.points, 1):
            existing = self.child(parent_id, point)
            if existing is not None and existing.info.status == "FINISHED":
                print(f"[{i}/{len(self.points)}] {point.name}: done, skipped", flush=True)
                done.append({"point": point.name, "run_id": existing.info.run_id, "skipped": True})
                continue
            print(f"[{i}/{len(self.points)}] {point.name}", flush=True)
            if existing is None:
                tags = {"crisp.kind": "point", "crisp.study": self.study.name, "crisp.scale": self.scale, "crisp.parent": parent_id,
                        "crisp.point": point.name, "crisp.method": point.config.selection.method, "crisp.task": point.config.task.name,
                        "crisp.variant": point.variant or point.config.selection.method,
                        "mlflow.parentRunId": parent_id, "crisp.config_hash": stable_hash(to_dict(point.config))}
                run_id = self.client.create_run(self.experiment, run_name=point.name, tags=tags).info.run_id
                params = [Param(k, v) for k, v in _flatten(to_dict(point.config)).items()]
                for start in range(0, len(params), 100):
                    self.client.log_batch(run_id, params=params[start:start + 100])
            else:
                run_id = existing.info.run_id
                self.client.update_run(run_id, "RUNNING")
            try:
                result = run_point(point.config, self.cache,
                                   lambda prefix: MLFlowLogger(tracking_uri=self.uri, run_id=run_id, prefix=prefix))
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")
                self.client.set_terminated(parent_id, "FAILED")
                raise
            self._log_result(run_id, point, result, Metric, RunTag)
            done.append({"point": point.name, "run_id": run_id, "skipped": False, **result.metrics})
        self.client.set_terminated(parent_id, "FINISHED")
        return done

    def _log_result(self, run_id: str, point: Point, result, Metric, RunTag) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics.items()]
        tags = {f"crisp.cache.{stage}": key for stage, key in result.keys.items()} | self.provenance
        tags["crisp.checkpoint"] = str(result.artifacts.get("checkpoint", ""))
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_text(run_id, yaml.safe_dump(to_dict(point.config), sort_keys=False), "config.yaml")
        for name, path in result.artifacts.items():
            if name != "checkpoint":  # checkpoints stay in the cache; the tag says where
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")
