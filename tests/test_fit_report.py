"""`crisp fit` and `crisp split plan` on a split study's rows: the runs' columns become (N, D, D′, loss),
the report is written per task, and the planner reads it back through the command line."""

import json

import numpy as np
import pandas as pd
import yaml
from test_scaling import synthetic_runs

from analysis.fit_report import fit_task
from analysis.split_runs import split_frame


def test_a_split_study_s_runs_become_generalist_and_specialization_tokens():
    runs = pd.DataFrame({
        "point": ["base only", "crisp after base", "crisp from scratch", "uniform from scratch"], "task": "medical", "seed": 0,
        "method": ["crisp", "crisp", "crisp", "uniform"], "model/non_embedding_params": 1e6,
        "base/tokens": [800.0, 800.0, np.nan, np.nan], "train/final_tokens": [np.nan, 50.0, 50.0, 70.0],
        "test/medical/loss": [5.0, 4.5, 4.8, 5.2]})
    frame = split_frame(runs)
    assert frame[["D", "Dp"]].values.tolist() == [[800, 0], [800, 50], [0, 50], [70, 0]]
    assert frame["loss"].tolist() == [5.0, 4.5, 4.8, 5.2] and (frame["N"] == 1e6).all()


def test_the_report_is_written_per_task_and_the_planner_reads_it(tmp_path, capsys):
    from crisp_pl.cli import main

    study = tmp_path / "mysplit.yaml"
    study.write_text(yaml.safe_dump({"name": "mysplit", "config": {"results_dir": str(tmp_path)}}))
    folder = tmp_path / "figures" / "mysplit-tiny"
    paths = fit_task(synthetic_runs("mismatch"), "medical", folder, bootstrap=5, domains=2)
    assert {p.name for p in paths} >= {"fit-medical.json", "fit-medical.md", "fit-medical.png", "isoflop-medical.pdf"}
    record = json.loads((folder / "fit-medical.json").read_text())
    assert record["fit"]["law"] == "mismatch" and record["heldout_max_rel_error"] < 0.02
    assert main(["split", "plan", str(study), "--budget", "1e17", "--domains", "4"]) == 0
    out = capsys.readouterr().out
    assert "medical (mismatch law): N = " in out and "of the budget on specialization" in out
    assert main(["split", "plan", str(study), "--budget", "1e17", "--task", "legal"]) == 1  # no such fit: an error, not a trace
