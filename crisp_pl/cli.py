"""`crisp`: run named studies, see their state, draw their figures, open the MLflow UI.

    crisp study list
    crisp study run NAME [--scale tiny|small|paper] [--set key=value ...]
    crisp study status NAME [--scale ...]
    crisp figures NAME [--scale ...]
    crisp ui [--port 5000]
"""

from __future__ import annotations

import argparse
import os
import sys

from crisp_pl.config import ConfigError


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="study name (studies/NAME.yaml) or a path to a study YAML")
    parser.add_argument("--scale", default="tiny", help="configs/scales/SCALE.yaml preset (default: tiny)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.max_steps=50 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crisp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    study = commands.add_parser("study", help="list, run and inspect named studies").add_subparsers(dest="action", required=True)
    study.add_parser("list", help="the studies under studies/")
    _study_args(study.add_parser("run", help="run every point of a study (finished points are skipped)"))
    _study_args(study.add_parser("status", help="which points are done, running, failed; cached stages"))
    _study_args(study.add_parser("show", help="print each point's resolved config"))
    figures = commands.add_parser("figures", help="draw a study's figures and tables from the MLflow store")
    _study_args(figures)
    ui = commands.add_parser("ui", help="the MLflow comparison UI over the results store, on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--results-dir", default="results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "study":
            return _study(args)
        if args.command == "figures":
            from analysis.figures import draw_study

            from crisp_pl.study import StudyRunner, load_study

            runner = StudyRunner(load_study(args.name), args.scale, args.sets)
            for path in draw_study(runner):
                print(path)
            return 0
        if args.command == "ui":
            return _ui(args)
    except ConfigError as error:
        print(f"crisp: config error: {error}", file=sys.stderr)
        return 2
    except LookupError as error:
        print(f"crisp: {error}", file=sys.stderr)
        return 1
    return 1


def _study(args) -> int:
    import yaml

    from crisp_pl.config import to_dict
    from crisp_pl.study import StudyRunner, list_studies, load_study, points

    if args.action == "list":
        for study in list_studies():
            print(f"{study.name:24s} {study.description.strip().splitlines()[0] if study.description else ''}")
        return 0
    study = load_study(args.name)
    if args.action == "show":
        for point in points(study, args.scale, args.sets):
            print(f"# {point.name}\n{yaml.safe_dump(to_dict(point.config), sort_keys=False)}")
        return 0
    runner = StudyRunner(study, args.scale, args.sets)
    if args.action == "run":
        runner.run()
        print(f"study {study.name} [{args.scale}] finished; figures: crisp figures {study.name} --scale {args.scale}; UI: crisp ui")
        return 0
    for row in runner.status():
        print(f"{row['state']:8s} {row['point']}  {row['run_id']}")
    for stage, counts in runner.cache.status().items():
        print(f"cache {stage:12s} {counts['done']} done, {counts['partial']} partial")
    return 0


def _ui(args) -> int:
    from pathlib import Path

    store = Path(args.results_dir).resolve() / "mlflow.db"
    if not store.is_file():
        raise ConfigError(f"{store}: no MLflow store yet; run a study first (crisp study run quickstart)")
    command = ["mlflow", "ui", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1", "--port", str(args.port)]
    print(" ".join(command), flush=True)
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
