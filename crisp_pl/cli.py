"""`crisp`: run named studies, see their state, draw their figures, open the MLflow UI.

    crisp init [DIR]
    crisp study list
    crisp study run NAME [--scale tiny|small|paper] [--set key=value ...]
    crisp study status NAME [--scale ...]
    crisp study plan NAME [--scale ...]
    crisp figures NAME [--scale ...]
    crisp coverage NAME [--scale ...]
    crisp inspect RUN_ID [--results-dir results] [--cache-dir DIR] [--top 10] [--examples 2]
    crisp tune NAME --trials N [--scale ...] [--set key=value ...]
    crisp fit NAME [--scale ...] [--bootstrap 200] [--domains K]
    crisp task new NAME --from PATH [--kind text|jsonl|parquet] [--text-field F] [--id-field F] [--study]
    crisp split plan NAME --budget FLOPS [--domains K] [--task TASK] [--scale ...]
    crisp ui [--port 5000]
    crisp mcq-tasks DIR [--sets arc_easy mmlu ...] [--seed 0]
    crisp lm-eval --model crisp --model_args checkpoint=PATH --tasks arc_easy_test_half --include_path DIR [lm-eval flags]
    crisp export CHECKPOINT DIR [--force]
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from crisp_pl import workspace
from crisp_pl.config import ConfigError
from crisp_pl.corpus.documents import CorpusError


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="study name (studies/NAME.yaml) or a path to a study YAML")
    parser.add_argument("--scale", default="tiny", help="configs/scales/SCALE.yaml preset (default: tiny)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.max_steps=50 (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                        help="the study's seeds replaced by these (e.g. --seeds 0 1 2 3): finished seeds' stages are reused")


def _load(args):
    """The study the command names, with `--seeds` in place of its own."""
    import dataclasses

    from crisp_pl.study import load_study

    study = load_study(args.name)
    if args.seeds is not None:
        if len(set(args.seeds)) != len(args.seeds):
            raise ConfigError(f"--seeds repeats a value: {args.seeds}")
        study = dataclasses.replace(study, seeds=list(args.seeds))
    return study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crisp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a config or corpus error")
    parser.add_argument("--workspace", default=None, metavar="DIR",
                        help="the workspace whose studies and configs come before the built-in ones, and whose results/ "
                             "studies write (default: $CRISP_WORKSPACE, else the nearest folder up holding crisp-workspace.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="make a workspace: your studies/, configs/tasks/ and results/, apart from the tool's")
    init.add_argument("folder", nargs="?", default=".", help="the workspace folder (default: the current one)")
    study = commands.add_parser("study", help="list, run and inspect named studies").add_subparsers(dest="action", required=True)
    study.add_parser("list", help="the studies in use: the workspace's, then the built-in ones")
    _study_args(study.add_parser("run", help="run every point of a study (finished points are skipped)"))
    _study_args(study.add_parser("status", help="which points are done, running, failed; cached stages"))
    show = study.add_parser("show", help="print each point's resolved config")
    _study_args(show)
    show.add_argument("--diff", action="store_true", help="only the config keys whose values differ between the points")
    _study_args(study.add_parser("plan", help="before running: each point's cached and to-compute stages, its training "
                                              "FLOPs and device-hours"))
    figures = commands.add_parser("figures", help="draw a study's figures and tables from the MLflow store")
    _study_args(figures)
    _study_args(commands.add_parser("coverage", help="before training: how well the pool can serve each specialist set of "
                                                     "a study, with a one-line verdict (data stages only)"))
    inspect = commands.add_parser("inspect", help="what a CRISP run selected: its top clusters, their sources and example windows")
    inspect.add_argument("run_id", help="the MLflow run id (crisp study status NAME lists them)")
    inspect.add_argument("--results-dir", default=None, help="the results folder the run was logged in (default: the "
                                                             "workspace's results/, else results)")
    inspect.add_argument("--cache-dir", default=None, help="the stage cache the run read (default: the one it logged, "
                                                           "its results folder's cache/)")
    inspect.add_argument("--top", type=int, default=10, help="clusters to show, by sampling weight (default: 10)")
    inspect.add_argument("--examples", type=int, default=2, help="example windows per cluster (default: 2)")
    tune = commands.add_parser("tune", help="an Optuna search over the study's `search` block (resumes where it stopped)")
    _study_args(tune)
    tune.add_argument("--trials", type=int, required=True, help="run until this many trials are done (complete or pruned)")
    fit = commands.add_parser("fit", help="fit scaling laws L(N, D, D′) to a split study's runs, per task (analysis/fit_report.py)")
    _study_args(fit)
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the parameters' intervals (default: 200)")
    fit.add_argument("--domains", type=int, default=2, help="K, the domains sharing a base, for the report's splits (default: 2)")
    split = commands.add_parser("split", help="the optimal pretrain/specialize split from a study's fit").add_subparsers(
        dest="action", required=True)
    split_plan = split.add_parser("plan", help="N, D and D′ minimizing the fitted loss at a budget shared by K domains")
    _study_args(split_plan)
    split_plan.add_argument("--budget", type=float, required=True, help="training FLOPs, e.g. 1e20 (6N(D + K·D′))")
    split_plan.add_argument("--domains", type=int, default=1, help="K, the domains sharing the base (default: 1)")
    split_plan.add_argument("--task", default=None, help="the fitted task (default: every task crisp fit fitted)")
    task = commands.add_parser("task", help="task presets").add_subparsers(dest="action", required=True)
    new = task.add_parser("new", help="a task preset (configs/tasks/NAME.yaml in the workspace) from your own files, "
                                      "and with --study a study")
    new.add_argument("name", help="the task's name (metrics test/NAME/ppl)")
    new.add_argument("--from", dest="source", required=True, help="a folder of .txt files, a .jsonl(.gz/.zst) or .parquet file, or a glob")
    new.add_argument("--kind", choices=["text", "jsonl", "parquet"], default=None, help="the files' kind (default: from the path)")
    new.add_argument("--text-field", default="text", help="jsonl / parquet: the field holding the text (default: text)")
    new.add_argument("--id-field", default=None, help="jsonl / parquet: the field holding each document's id (default: file:line)")
    new.add_argument("--study", action="store_true", help="also write studies/NAME.yaml: uniform, specialist, CRISP, CRISP+FT, 3 seeds")
    new.add_argument("--force", action="store_true", help="replace existing files")
    ui = commands.add_parser("ui", help="the MLflow comparison UI over the results store, on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000, help="port to serve on (default: 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                                                         "0.0.0.0 shares the store with the network, unauthenticated)")
    ui.add_argument("--results-dir", default=None, help="the results folder whose mlflow.db to open (default: the "
                                                        "workspace's results/, else results)")
    mcq = commands.add_parser("mcq-tasks", help="write lm-eval task YAMLs of the offline multiple-choice sets")
    mcq.add_argument("folder", help="where the YAMLs and their jsonl data go (lm-eval's --include_path)")
    mcq.add_argument("--sets", nargs="+", default=None, help="MCQ sets (default: all: arc_easy arc_challenge mmlu sciq)")
    mcq.add_argument("--seed", type=int, default=0, help="seed of the train/test halves (a task's `task.seed`)")
    export = commands.add_parser("export", help="write a checkpoint as a Hugging Face GPT2LMHeadModel folder with its tokenizer")
    export.add_argument("checkpoint", help="a crisp_pl checkpoint (.ckpt)")
    export.add_argument("folder", help="the folder to write (AutoModelForCausalLM / AutoTokenizer.from_pretrained(DIR))")
    export.add_argument("--force", action="store_true", help="replace a previous export in DIR")
    commands.add_parser("lm-eval", add_help=False,
                        help="lm-eval's own command line with the `crisp` model registered (every lm-eval flag works)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # lm-eval parses its own flags
        from crisp_pl.evaluate.lm_eval_adapter import main as lm_eval_main

        return lm_eval_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.workspace is not None:  # the lookup reads it (crisp_pl.workspace), as it does when the user sets it
        os.environ[workspace.ENV] = args.workspace
    try:
        if getattr(args, "results_dir", "") is None:
            args.results_dir = str(workspace.results_dir())
        if args.command == "init":
            folder = args.folder
            for path in workspace.init(Path(folder)):
                print(path)
            print(f"workspace {Path(folder).resolve()}: add studies/NAME.yaml, or `crisp task new NAME --from PATH --study`; "
                  f"run crisp from here (or with --workspace {folder})")
            return 0
        if args.command == "study":
            return _study(args)
        if args.command == "figures":
            from analysis.figures import draw_study
            from crisp_pl.study import StudyRunner

            runner = StudyRunner(_load(args), args.scale, args.sets)
            results = runner.results()
            for path in draw_study(results):
                print(path)
            runner.attach_figures(results.folder, results.runs)
            return 0
        if args.command == "coverage":
            from crisp_pl.explain import coverage_lines, coverage_report
            from crisp_pl.study import StudyRunner

            print("\n".join(coverage_lines(coverage_report(StudyRunner(_load(args), args.scale, args.sets)))))
            return 0
        if args.command == "inspect":
            from crisp_pl.explain import inspect_run

            print("\n".join(inspect_run(args.results_dir, args.run_id, args.top, args.examples, cache_dir=args.cache_dir)))
            return 0
        if args.command == "tune":
            from crisp_pl.tune import Tuner

            Tuner(_load(args), args.scale, args.sets).run(args.trials)
            return 0
        if args.command == "task":
            from crisp_pl.task_new import new_task

            for path in new_task(args.name, args.source, args.kind, args.text_field, args.id_field, args.study, args.force):
                print(path)
            if args.study:
                print(f"next: crisp study plan {args.name}; crisp study run {args.name}; crisp figures {args.name}")
            return 0
        if args.command == "fit":
            return _fit(args)
        if args.command == "split":
            return _split_plan(args)
        if args.command == "ui":
            return _ui(args)
        if args.command == "mcq-tasks":
            return _mcq_tasks(args)
        if args.command == "export":
            return _export(args)
    except (ConfigError, CorpusError) as error:  # bad input: one paragraph naming the file, line or key
        if args.debug:
            raise
        kind = "config" if isinstance(error, ConfigError) else "corpus"
        print(f"crisp: {kind} error: {error}\n(rerun with --debug for the traceback)", file=sys.stderr)
        return 2
    except workspace.NoWorkspace as error:  # nothing of the user's is written into the tool's own folders
        print(f"crisp: {error}", file=sys.stderr)
        return 2
    except LookupError as error:
        print(f"crisp: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno not in DISK_FULL or args.debug:
            raise
        # every stage is written into KEY.partial/ and renamed when complete: nothing finished is damaged
        print(f"crisp: out of disk space or over a file-size limit ({error.strerror}{': ' + error.filename if error.filename else ''}). "
              f"Finished stages are intact and the stage being written stays in its .partial folder; free space "
              f"(or raise the limit) and rerun the same command to resume.\n(rerun with --debug for the traceback)", file=sys.stderr)
        return 3
    return 1


DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _study(args) -> int:
    import yaml

    from crisp_pl.config import to_dict
    from crisp_pl.study import StudyRunner, list_studies, points, shadowed
    from crisp_pl.tracking import flatten_params

    if args.action == "list":
        for study in list_studies():
            hidden = shadowed(study)
            origin = study.origin + (f", shadows the built-in {hidden}" if hidden else "")
            print(f"{study.name:24s} [{origin}] {study.description.strip().splitlines()[0] if study.description else ''}")
        return 0
    study = _load(args)
    if args.action == "show":
        if study.seeds:  # one config per group: the seeded points differ from it only in train.seed and selection.seed
            points(study, args.scale, args.sets, with_seeds=True)  # the seeded plan must build too (a --set of a seed is an error)
            print(f"# each point below runs once per seed in {study.seeds} (named POINT,seed=N), "
                  f"with train.seed and selection.seed set to N\n")
        shown = points(study, args.scale, args.sets)
        configs = [flatten_params(to_dict(point.config)) for point in shown]
        differ = [k for k in configs[0] if len({c.get(k) for c in configs}) > 1] if args.diff else None
        for point, config in zip(shown, configs):
            if differ is None:
                print(f"# {point.name}\n{yaml.safe_dump(to_dict(point.config), sort_keys=False)}")
            else:
                print(f"# {point.name}\n" + "".join(f"  {k}: {config[k]}\n" for k in differ))
        if differ is not None:
            print(f"({len(differ)} of {len(configs[0])} keys differ; the rest are shared: crisp study show {study.ref} without --diff)")
        return 0
    runner = StudyRunner(study, args.scale, args.sets)
    if args.action == "plan":
        return _plan(runner)
    if args.action == "run":
        runner.run()
        print(f"study {study.name} [{args.scale}] finished; figures: crisp figures {study.ref} --scale {args.scale}; UI: crisp ui")
        return 0
    rows = runner.status()
    for row in rows:
        took = "" if row["seconds"] is None else " (logged from the cache)" if row["seconds"] < 1 else f" in {row['seconds']:.0f} s"
        done = f"  test ppl {row['ppl']:.1f}{took}" if row["ppl"] is not None else ""
        print(f"{row['state']:9s} {row['point']}{done}  {row['run_id']}")
    states = {state: sum(r["state"] == state for r in rows) for state in dict.fromkeys(r["state"] for r in rows)}
    print(f"\n{', '.join(f'{n} {state}' for state, n in states.items())} of {len(rows)} points; "
          f"which stages each would reuse or compute: crisp study plan {study.ref} --scale {args.scale}")
    if "elsewhere" in states:
        print("elsewhere: finished in another run of this study (other --seeds); `crisp study run` logs it here from the cache")
    return 0


def _plan(runner) -> int:
    from crisp_pl.cache import is_finished
    from crisp_pl.plan import flops_per_second, plan_point, pool_stages

    rate = flops_per_second(runner.cache)
    done = {row["point"] for row in runner.status() if row["state"] == "done"}
    total_flops, computing = 0.0, 0
    shared: dict[tuple[str, str], list] = {}  # (stage, key) -> [entry, points reading it]
    for i, point in enumerate(runner.points, 1):
        for stage, entry in pool_stages(point.config, runner.cache.root):
            shared.setdefault((stage, entry.key), [entry, 0])[1] += 1
        plan = plan_point(point.name, point.config, runner.cache.root, point.name in done)
        if plan.done:
            state = "done (finished in MLflow)"
        elif plan.computes_from is None:
            state = f"cached: {', '.join(plan.reused)} (logs to MLflow only)"
        else:
            computing += 1
            total_flops += plan.train_flops
            reused = f"reuses {', '.join(plan.reused)}; " if plan.reused else ""
            state = f"{reused}computes {plan.computes_from} and after; training {plan.train_flops:.3g} FLOPs"
        print(f"[{i}/{len(runner.points)}] {point.name}: {state}", flush=True)
    hours = f" ~ {total_flops / rate / 3600:.2g} device-hours at this cache's measured {rate:.3g} FLOP/s" if rate else \
        " (no device-hours: nothing has trained in this cache yet to measure the rate)"
    # a stage two points share but neither has built yet has no key to compare until its inputs exist: each counts it
    print(f"\n{computing} of {len(runner.points)} points to compute: training at most {total_flops:.3g} FLOPs{hours} "
          f"(points that will share a model not built yet, e.g. one generalist for several tasks, each count it); "
          f"selection stages (SBERT, k-means, auxiliary LMs) not counted")
    print("\ntask-independent stages (cost/pool_*), each built once and shared by the points that read it:")
    for (stage, key), (entry, readers) in shared.items():
        state = "cached" if is_finished(entry.path) else "to build"
        print(f"  {stage:<16} {key}  {state:<8}  read by {readers} of {len(runner.points)} points", flush=True)
    return 0


def _fit(args) -> int:
    from analysis.fit_report import fit_task
    from analysis.split_runs import split_frame
    from crisp_pl.study import StudyRunner

    results = StudyRunner(_load(args), args.scale, args.sets).results()
    frame = split_frame(results.runs)
    for task, runs in frame.groupby("task"):
        print(f"{task}: fitting {len(runs)} runs", flush=True)
        for path in fit_task(runs.reset_index(drop=True), str(task), results.folder, args.bootstrap, args.domains):
            print(path)
    return 0


def _split_plan(args) -> int:
    from pathlib import Path

    from analysis.fit_report import load_fit
    from analysis.split_plan import optimal_split
    from crisp_pl.study import points

    study = _load(args)
    folder = Path(points(study, args.scale, args.sets)[0].config.results_dir) / "figures" / f"{study.name}-{args.scale}"
    tasks = [args.task] if args.task else sorted(p.stem.removeprefix("fit-") for p in folder.glob("fit-*.json"))
    if not tasks:
        raise LookupError(f"{folder}: no fits yet; run crisp fit {study.ref} --scale {args.scale}")
    print(f"budget {args.budget:.3g} FLOPs = 6N(D + K·D′), K = {args.domains} domains sharing one base")
    for task in tasks:
        fit = load_fit(folder, task)
        best = optimal_split(fit, args.budget, args.domains)
        print(f"{task} ({fit.law} law): N = {best.N:.3g} non-embedding parameters, D = {best.D:.3g} base tokens, "
              f"D′ = {best.Dp:.3g} tokens per domain ({best.share:.0%} of the budget on specialization); "
              f"predicted loss {best.loss:.4f}" + ("; N is on the edge of the sizes searched (the fitted ones / 4 to x 16): "
                                                    "the fit does not determine it" if best.at_bound else ""))
    return 0


def _mcq_tasks(args) -> int:
    """Each set whole (`SET_full`) and its test half (`SET_test_half`, the questions a task with this
    seed holds out: the same split as `split: halves`)."""
    from crisp_pl.config import TaskConfig
    from crisp_pl.corpus.mcq import MCQ_SETS, load_questions, mcq_documents
    from crisp_pl.corpus.tasks import split_task
    from crisp_pl.evaluate.mcq import write_tasks

    tasks = {}
    for name in args.sets or MCQ_SETS:
        questions = load_questions(name)
        task = TaskConfig(name=name, sources=[name], split="halves", validation_fraction=0.1, seed=args.seed)
        test_ids = {d.doc_id for d in split_task(list(mcq_documents(name)), task)["test"]}
        tasks[f"{name}_full"] = questions
        tasks[f"{name}_test_half"] = [q for q in questions if q.doc_id in test_ids]
    for task in write_tasks(tasks, args.folder):
        print(f"{task:28s} {len(tasks[task]):6d} questions")
    print(f"use: crisp lm-eval --model crisp --model_args checkpoint=PATH --tasks TASK --include_path {args.folder}")
    return 0


def _export(args) -> int:
    from crisp_pl.model.export import export_checkpoint

    try:
        folder = export_checkpoint(args.checkpoint, args.folder, force=args.force)
    except (FileExistsError, FileNotFoundError, ValueError) as error:  # ValueError: not a GPT checkpoint, ExportError
        print(f"crisp: export: {error}", file=sys.stderr)
        return 1
    print(f"{folder}: GPT2LMHeadModel + tokenizer; load with AutoModelForCausalLM.from_pretrained({str(folder)!r})")
    return 0


def _ui(args) -> int:
    from pathlib import Path

    from crisp_pl.ui import runs_url

    store = Path(args.results_dir).resolve() / "mlflow.db"
    if not store.is_file():
        raise ConfigError(f"{store}: no MLflow store yet; run a study first (crisp study run quickstart)")
    _check_port_free(args.host, args.port)
    # this interpreter's mlflow, so the command works without the venv activated; one worker: a local UI
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store}", "--host", args.host,
               "--port", str(args.port), "--workers", "1"]
    reach = "this machine only" if args.host in ("127.0.0.1", "localhost", "::1") else "ANY machine that can reach this one, without a password"
    print(f"crisp ui: {store} on http://{args.host}:{args.port} ({reach})\n{' '.join(command)}\n"
          f"open the studies' runs at {runs_url(store, args.host, args.port)}", flush=True)
    os.execv(command[0], command)
    return 0  # not reached


def _check_port_free(host: str, port: int) -> None:
    """MLflow reports a taken port and still exits 0; say so first, with the fix."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise ConfigError(f"port {port} on {host} is in use (another `crisp ui`?); pass --port N") from None


if __name__ == "__main__":
    sys.exit(main())
