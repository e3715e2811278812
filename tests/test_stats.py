"""analysis/stats.py and the seed-aware figures and tables, on DataFrames built by hand (no MLflow, no training)."""

import math

import pandas as pd
import pytest

from analysis.figures import (
    CAPTIONS,
    chance_level,
    draw,
    group_table,
    paired_table,
    results_table,
    short_label,
)
from analysis.stats import (
    condition,
    format_mean_se,
    mean_se,
    paired_difference,
    paired_differences,
    reference_groups,
    summarize,
)


def runs_frame():
    """Two tasks; on medical: generalist and crisp with seeds 0-2, crisp+ft missing seed 2."""
    rows = []
    ppl = {("generalist", "uniform", False): [100.0, 110.0, 120.0], ("crisp", "crisp", False): [90.0, 95.0, 110.0],
           ("crisp+ft", "crisp", True): [80.0, 86.0]}
    for (group, method, finetune), values in ppl.items():
        for seed, value in enumerate(values):
            rows.append({"point": f"{group},task=medical,seed={seed}", "group": f"{group},task=medical", "seed": seed,
                         "method": method, "task": "medical", "finetune": finetune, "run_id": f"{group}{seed}",
                         "test/medical/ppl": value, "cost/total_flops": 1e12 + seed})
    for group, method, accs in (("generalist", "uniform", [0.30, 0.34]), ("crisp", "crisp", [0.40, 0.36])):
        for seed, acc in enumerate(accs):
            rows.append({"point": f"{group},task=arc_easy,seed={seed}", "group": f"{group},task=arc_easy", "seed": seed,
                         "method": method, "task": "arc_easy", "finetune": False, "run_id": f"{group}-arc{seed}",
                         "test/arc_easy/ppl": 50.0 + seed, "test/arc_easy/acc": acc, "test/arc_easy/acc_norm": acc - 0.01,
                         "test/arc_easy/chance": 0.2525})
    return pd.DataFrame(rows)


def test_mean_and_standard_error_are_exact():
    stats = mean_se([100.0, 110.0, 120.0])
    assert stats.n == 3 and stats.mean == 110.0
    assert stats.se == pytest.approx(10.0 / math.sqrt(3), abs=1e-12)  # sample std (ddof=1) is 10
    one = mean_se([7.0, float("nan")])
    assert one.n == 1 and one.mean == 7.0 and math.isnan(one.se)  # NaN is no value; one seed has no SE
    none = mean_se([])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.se)


def test_summarize_per_group_in_order():
    medical = runs_frame().query("task == 'medical'")
    table = summarize(medical, "test/medical/ppl")
    assert list(table["group"]) == ["generalist,task=medical", "crisp,task=medical", "crisp+ft,task=medical"]
    assert list(table["n"]) == [3, 3, 2]
    assert list(table["mean"]) == [110.0, 295.0 / 3, 83.0]
    assert table["se"][2] == pytest.approx(math.sqrt(18.0) / math.sqrt(2), abs=1e-12)  # std of (80, 86) is sqrt(18)
    assert table["seeds"][2] == (0, 1)


def test_paired_difference_matches_seeds_and_says_which_were_left_out():
    runs = runs_frame()
    d = paired_difference(runs, "test/medical/ppl", "crisp,task=medical", "generalist,task=medical")
    # differences by seed: -10, -15, -10 -> mean -35/3, sample std sqrt(25/3)
    assert d.n == 3 and d.seeds == (0, 1, 2) and d.unpaired == ()
    assert d.mean == pytest.approx(-35.0 / 3, abs=1e-12)
    assert d.se == pytest.approx(math.sqrt(25.0 / 3) / math.sqrt(3), abs=1e-12)
    # crisp+ft has no seed 2: only seeds 0 and 1 pair (-20, -24), seed 2 is listed as unpaired
    ft = paired_difference(runs, "test/medical/ppl", "crisp+ft,task=medical", "generalist,task=medical")
    assert ft.n == 2 and ft.seeds == (0, 1) and ft.unpaired == (2,)
    assert ft.mean == -22.0 and ft.se == pytest.approx(2.0, abs=1e-12)  # std of (-20, -24) is 2*sqrt(2), /sqrt(2)
    # pairing is by seed, not by position: shuffling the rows changes nothing
    shuffled = runs.sample(frac=1.0, random_state=3)
    assert paired_difference(shuffled, "test/medical/ppl", "crisp+ft,task=medical", "generalist,task=medical") == ft
    # a seed with a NaN value counts as missing on that side
    holed = runs.copy()
    holed.loc[(holed["group"] == "generalist,task=medical") & (holed["seed"] == 0), "test/medical/ppl"] = float("nan")
    gap = paired_difference(holed, "test/medical/ppl", "crisp+ft,task=medical", "generalist,task=medical")
    assert gap.n == 1 and gap.mean == -24.0 and math.isnan(gap.se) and gap.unpaired == (0, 2)


def test_paired_differences_against_a_reference_and_reference_groups():
    medical = runs_frame().query("task == 'medical'")
    assert reference_groups(medical, "uniform") == ["generalist,task=medical"]
    assert reference_groups(medical, "crisp") == ["crisp,task=medical"]  # crisp+ft fine-tuned: not the reference
    assert reference_groups(medical.drop(columns="finetune"), "crisp") == ["crisp,task=medical", "crisp+ft,task=medical"]
    controls = pd.DataFrame({"group": ["crisp", "crisp_flat", "crisp_16"], "method": "crisp", "variant": ["crisp", "crisp_flat", ""]})
    assert reference_groups(controls, "crisp") == ["crisp"]  # the variant named after the method; the others are compared to it
    assert reference_groups(controls.iloc[1:], "crisp") == ["crisp_flat", "crisp_16"]
    table = paired_differences(medical, "test/medical/ppl", "crisp,task=medical")
    assert list(table["group"]) == ["generalist,task=medical", "crisp+ft,task=medical"]
    assert list(table["n"]) == [3, 2] and table["mean"][0] == pytest.approx(35.0 / 3) and table["mean"][1] == -9.5


def test_in_a_sweep_each_reference_is_paired_with_the_methods_at_its_own_point(tmp_path):
    assert condition("crisp+ft,task=medical,train.max_steps=150") == "train.max_steps=150"
    assert condition("model.size=mini,selection.method=crisp") == "model.size=mini" and condition("crisp_lsi") == ""
    # the budget study's shape: the generalist is only ever fine-tuned; two budgets, two seeds
    rows = [{"point": f"{v},train.max_steps={n},seed={s}", "group": f"{v},train.max_steps={n}", "seed": s, "task": "medical",
             "method": "uniform" if v == "generalist+ft" else "crisp", "finetune": v.endswith("+ft"),
             "test/medical/ppl": {"generalist+ft": 300.0, "crisp": 400.0, "crisp+ft": 280.0}[v] * 300 / n
             + s * {"generalist+ft": 0, "crisp": 2, "crisp+ft": 4}[v]}
            for n in (150, 300) for v in ("generalist+ft", "crisp", "crisp+ft") for s in (0, 1)]
    runs = pd.DataFrame(rows)
    assert reference_groups(runs, "uniform") == [] and reference_groups(runs, "uniform", finetuned=True) == \
        ["generalist+ft,train.max_steps=150", "generalist+ft,train.max_steps=300"]
    text = results_table(runs, tmp_path / "results.md").read_text()
    section = text.split("#### Paired differences against the generalist (fine-tuned) (`generalist+ft,train.max_steps=300`)")[1]
    table = [" ".join(line.split()) for line in section.split("####")[0].splitlines() if line.startswith("| crisp")]
    assert table == ["| crisp,train.max_steps=300 | 2 | 0, 1 | 101.0 ± 1.0 | - |",
                     "| crisp+ft,train.max_steps=300 | 2 | 0, 1 | -18.0 ± 2.0 | - |"]
    assert "at train.max_steps=300, seed by seed" in section


def test_a_seed_twice_in_a_group_is_an_error():
    runs = runs_frame()
    twice = pd.concat([runs, runs.iloc[[0]]])
    with pytest.raises(ValueError, match="more than one run for seed 0"):
        summarize(twice, "test/medical/ppl")


def test_format_mean_se():
    assert format_mean_se(12.3456, 0.12345) == "12.35 ± 0.12"  # SE to two significant digits, the mean to its decimals
    assert format_mean_se(40834.2, 879.1) == "40834 ± 879" and format_mean_se(0.32, 0.02) == "0.320 ± 0.020"
    assert format_mean_se(-22.0, 2.0) == "-22.0 ± 2.0" and format_mean_se(5.0, 0.0) == "5.0000 ± 0.0000"
    assert format_mean_se(12.3456, float("nan")) == "12.35" and format_mean_se(40834.2) == "40834"  # one seed: no SE
    assert format_mean_se(4.033e10) == "4.033e+10" and format_mean_se(0.005649) == "0.005649"
    assert format_mean_se(2016.0) == "2016" and format_mean_se(31.5) == "31.50"
    assert format_mean_se(float("nan"), 1.0) == "-"


def test_tables_give_mean_se_and_paired_sections(tmp_path):
    runs = runs_frame()
    medical = runs[runs["task"] == "medical"]
    table = group_table(medical, "medical")
    assert list(table["n"]) == [3, 3, 2] and list(table["seeds"]) == ["0, 1, 2", "0, 1, 2", "0, 1"]
    assert table["test ppl"][0] == format_mean_se(110.0, 10.0 / math.sqrt(3))
    paired = paired_table(medical, "medical", "generalist,task=medical")
    assert list(paired["unpaired seeds (left out)"]) == ["-", "2"] and list(paired["n"]) == [3, 2]
    assert paired["test ppl Δ"][1] == "-22.0 ± 2.0"
    text = results_table(runs, tmp_path / "results.md").read_text()
    assert "#### Paired differences against the generalist (`generalist,task=medical`)" in text
    # each pair once: on arc_easy CRISP's table would only repeat "crisp - generalist" with its sign flipped
    assert "#### Paired differences against CRISP (`crisp,task=arc_easy`)" not in text
    against_crisp = text.split("#### Paired differences against CRISP (`crisp,task=medical`)")[1].split("####")[0]
    assert [line.split("|")[1].strip() for line in against_crisp.splitlines() if line.startswith("| crisp")] == ["crisp+ft,task=medical"]
    assert "acc Δ" in text and "chance" in text and "±" in text
    assert text.count("#### Every run") == 2
    assert text.startswith("### Every task")  # one table across the study's tasks first
    across = [" ".join(line.split()) for line in text.split("### medical")[0].splitlines() if line.startswith("| generalist")]
    assert across == [f"| generalist | {format_mean_se(110.0, 10.0 / math.sqrt(3))} | " + across[0].split(" | ", 2)[2]]
    assert "arc_easy acc" in text.split("### medical")[0]


def test_one_seed_draws_without_error_bars_and_old_frames_still_draw(tmp_path):
    runs = runs_frame()
    single = runs[runs["seed"] == 0]
    text = results_table(single, tmp_path / "one.md").read_text()
    assert not [line for line in text.splitlines() if line.startswith("|") and "±" in line]  # no SE from one seed
    assert "| generalist,task=medical | 1 | 0 | 100 | 1 TFLOP |" in [" ".join(line.split()) for line in text.splitlines()]
    old = single.drop(columns=["group", "seed", "finetune"])  # the columns before seeds existed
    paths = draw(old, pd.DataFrame(columns=["run_id", "step", "value"]), {}, tmp_path / "old")
    assert all(p.stat().st_size > 0 for p in paths)
    assert "crisp,task=medical,seed=0" in (tmp_path / "old" / "results.md").read_text()
    paths = draw(runs, pd.DataFrame({"run_id": ["crisp0", "crisp0"], "step": [1, 2], "value": [3.0, 2.5]}), {}, tmp_path / "all",
                 title="micro", description="CRISP beats\n  the generalist.")
    assert {p.name for p in paths} == {"results.png", "results.pdf", "val_loss.png", "val_loss.pdf", "results.md", "index.md"}
    listed = (tmp_path / "all" / "index.md").read_text().splitlines()
    assert listed[:3] == ["# micro", "", "CRISP beats the generalist."] and sum(line.startswith("- [") for line in listed) == 3
    assert "- [results.png](results.png) ([PDF](results.pdf)): held-out quality" in "\n".join(listed)  # the vector copy beside
    assert [line for line in listed if line.startswith("- [results.md]")] == \
        ["- [results.md](results.md): " + CAPTIONS["results.md"]]  # a table has no PDF beside it


def test_groups_that_share_their_pretraining_are_one_set_of_curves():
    from analysis.figures import curve_sets

    runs = pd.DataFrame({"run_id": ["u", "c", "f"], "group": ["generalist", "crisp", "crisp+ft"], "seed": [0, 0, 0],
                         "method": ["uniform", "crisp", "crisp"], "finetune": [False, False, True]})
    curves = pd.DataFrame({"run_id": ["u", "u", "c", "c", "f", "f"], "step": [4, 9] * 3, "value": [7.0, 6.5, 6.9, 6.1, 6.9, 6.1]})
    sets = curve_sets(runs, curves, pd.Series({"u": 100.0, "c": 100.0, "f": 100.0}))
    assert [(label, lines) for label, _, lines in sets] == [
        ("generalist", (((500.0, 1000.0), (7.0, 6.5)),)), ("crisp = crisp+ft", (((500.0, 1000.0), (6.9, 6.1)),))]
    assert [label for label, _, _ in curve_sets(runs, curves.assign(value=[7.0, 6.5, 6.9, 6.1, 6.9, 6.0]), None)] == \
        ["generalist", "crisp", "crisp+ft"]  # one value apart: three sets, on steps


def test_training_curves_run_on_tokens_where_the_runs_logged_them():
    from analysis.figures import tokens_per_step

    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "train/final_tokens": [1200.0, 6000.0, 0.0], "train/final_steps": [12, 20, 0]})
    per_step = tokens_per_step(runs)
    assert per_step["a"] == 100.0 and per_step["b"] == 300.0 and math.isnan(per_step["c"])  # no steps: no rate, not a division by 0
    assert tokens_per_step(runs.drop(columns="train/final_steps")).empty  # older runs: the curves stay on optimizer steps


def test_chance_line_comes_from_the_logged_metric_only():
    runs = runs_frame()
    assert chance_level(runs[runs["task"] == "arc_easy"], "arc_easy") == 0.2525
    assert chance_level(runs[runs["task"] == "arc_easy"].drop(columns="test/arc_easy/chance"), "arc_easy") is None
    assert chance_level(runs[runs["task"] == "medical"], "medical") is None
    assert short_label("crisp+ft,task=medical,seed=2") == "crisp+ft"


def test_sweep_figure_draws_a_metric_against_a_swept_quantity(tmp_path):
    from analysis.figures import sweep_figure

    rows = [{"point": f"{v},pool={n},seed={s}", "group": f"{v},pool={n}", "seed": s, "variant": v, "method": v,
             "task": "medical", "data/pool_windows": float(n), "test/medical/ppl": base + 10 * s - n / 100}
            for v, base in (("uniform", 500.0), ("crisp", 400.0)) for n in (4000, 1000, 2000) for s in (0, 1)]
    paths = sweep_figure(pd.DataFrame(rows), {"x": "data/pool_windows", "label": "pool windows", "log_x": True}, tmp_path)
    assert [p.name for p in paths] == ["sweep-data_pool_windows.png", "sweep-data_pool_windows.pdf", "sweep-data_pool_windows.md"]
    assert all(p.stat().st_size > 0 for p in paths)
    table = paths[2].read_text().splitlines()
    crisp = [line for line in table if "| crisp " in line]
    # one row per group, sorted along x; seeds 0 and 1 differ by 10: mean +5, SE = std (7.07) / sqrt(2) = 5
    assert [line.split("|")[4].strip() for line in crisp] == ["crisp,pool=1000", "crisp,pool=2000", "crisp,pool=4000"]  # each row's group
    assert [line.split("|")[5].strip() for line in crisp] == ["1000", "2000", "4000"]
    assert "395.0 ± 5.0" in crisp[0] and "365.0 ± 5.0" in crisp[2]
    assert sweep_figure(pd.DataFrame(rows), {"x": "selection/clusters"}, tmp_path) == []  # nothing logged it: no figure
    costs = pd.DataFrame(rows).assign(**{"cost/total_flops": lambda d: d["data/pool_windows"] * 1e10})
    table = sweep_figure(costs, {"x": "cost/total_flops"}, tmp_path)[2].read_text()
    assert "| 10 TFLOP |" in " ".join(table.split()) and "e+" not in table  # a cost axis in readable units


def test_a_total_cost_axis_reads_one_of_k_tasks_sharing_the_pool(tmp_path):
    from analysis.figures import sweep_figure

    rows = [{"point": f"{v},steps={n},seed={s}", "group": f"{v},steps={n}", "variant": v, "method": v, "seed": s,
             "task": "medical", "test/medical/ppl": 400.0 + s, "cost/pool_flops": 20e12 if v == "crisp" else 0.0,
             "cost/base_flops": 0.0, "cost/task_flops": n * 1e10, "cost/total_flops": (20e12 if v == "crisp" else 0.0) + n * 1e10}
            for v in ("uniform", "crisp") for n in (100, 400) for s in (0, 1)]
    paths = sweep_figure(pd.DataFrame(rows), {"x": "cost/total_flops", "tasks": 4}, tmp_path)
    assert paths[0].name == "sweep-cost_total_flops-4_tasks.png"
    table = " ".join(paths[2].read_text().split())
    assert "| 6 TFLOP |" in table and "| 9 TFLOP |" in table  # CRISP: 20 / 4 TFLOP of the pool plus 1 or 4 of its own
    assert "| 1 TFLOP |" in table and "| 4 TFLOP |" in table  # uniform reads no embedding: its cost is its own
    older = pd.DataFrame(rows).drop(columns=["cost/pool_flops", "cost/task_flops"])
    assert sweep_figure(older, {"x": "cost/total_flops", "tasks": 4}, tmp_path) == []  # runs from before the split: no figure


def test_a_sweep_draws_a_line_per_combination_of_its_series_columns(tmp_path):
    from analysis.figures import sweep_figure

    rows = [{"point": f"{v},share={share},k={k},seed=0", "group": f"{v},share={share},k={k}", "variant": v, "method": "crisp",
             "seed": 0, "task.train_share": share, "task": "medical", "selection/clusters": float(k), "test/medical/ppl": 400.0 + k}
            for v in ("crisp", "crisp_capped") for share in (0.25, 1.0) for k in (8, 64)]
    table = sweep_figure(pd.DataFrame(rows), {"x": "selection/clusters", "series": ["variant", "task.train_share"]}, tmp_path)[2]
    lines = {line.split("|")[3].strip() for line in table.read_text().splitlines()[2:]}
    assert lines == {"crisp, 0.25", "crisp, 1.0", "crisp_capped, 0.25", "crisp_capped, 1.0"}


def test_a_cost_axis_ticks_in_units_and_labels_only_the_2x_and_5x_between_decades():
    import matplotlib.pyplot as plt

    from analysis.figures import _ticks_in_units

    fig, ax = plt.subplots()
    ax.plot([3e12, 4e13], [1, 2])
    ax.set_xscale("log")
    _ticks_in_units(ax, "FLOP")
    fig.canvas.draw()
    low, high = ax.get_xlim()
    shown = [[t.get_text() for t in ax.get_xticklabels(minor=m) if t.get_text() and low <= t.get_position()[0] <= high]
             for m in (False, True)]
    plt.close(fig)
    assert shown == [["10 TFLOP"], ["5 TFLOP", "20 TFLOP"]]


def test_transfer_matrix_scores_every_group_on_every_task(tmp_path):
    from analysis.figures import transfer_matrix

    rows = []
    for task in ("medical", "programming"):
        for method in ("uniform", "crisp"):
            for seed in (0, 1):
                own = 100.0 if method == "crisp" else 200.0
                rows.append({"point": f"{method},task={task},seed={seed}", "group": f"{method},task={task}", "seed": seed,
                             "method": method, "task": task, "finetune": False,
                             f"test/{task}/ppl": own + seed, f"test/{'programming' if task == 'medical' else 'medical'}/ppl": 300.0})
    paths = transfer_matrix(pd.DataFrame(rows), tmp_path)
    assert [p.name for p in paths] == ["transfer.png", "transfer.pdf", "transfer.md"]
    table = [" ".join(line.split()) for line in paths[2].read_text().splitlines()]
    assert table[0] == "| group | ppl on medical | ppl on programming |"
    assert "| crisp,task=medical | 100.5 | 300 |" in table and "| crisp,task=programming | 300 | 100.5 |" in table
    assert transfer_matrix(pd.DataFrame(rows).drop(columns=["test/programming/ppl"]).query("task == 'medical'"), tmp_path) == []
    shared = pd.DataFrame(rows)
    generalist = shared["method"] == "uniform"
    shared.loc[generalist, ["test/medical/ppl", "test/programming/ppl"]] = 250.0  # one generalist model for both tasks
    table = [" ".join(line.split()) for line in transfer_matrix(shared, tmp_path)[2].read_text().splitlines()]
    assert "| uniform (every task) | 250 | 250 |" in table and len(table) == 2 + 3  # one generalist row, two CRISP rows


def test_a_method_has_one_colour_in_every_figure_and_its_fine_tuned_variant_a_darker_one():
    import matplotlib.colors as mcolors

    from analysis.style import METHOD_COLORS, group_colors, method_color

    runs = pd.DataFrame({"group": ["generalist", "crisp", "crisp+ft", "mystery"], "method": ["uniform", "crisp", "crisp", "new"],
                         "finetune": [False, False, True, False]})
    colors = group_colors(runs, ["crisp+ft", "generalist", "crisp", "mystery"])
    assert colors[1:3] == [METHOD_COLORS["uniform"], METHOD_COLORS["crisp"]] and colors[3] == "C3"
    assert sum(mcolors.to_rgb(colors[0])) < sum(mcolors.to_rgb(METHOD_COLORS["crisp"]))  # CRISP+FT: CRISP, darker
    assert method_color("crisp") == METHOD_COLORS["crisp"]
    swept = pd.DataFrame({"group": ["crisp,0.25", "crisp,1"], "method": ["crisp", "crisp"], "finetune": [False, False]})
    lighter, own = group_colors(swept, ["crisp,0.25", "crisp,1"])  # one method at two values: told apart, both CRISP's
    assert own == METHOD_COLORS["crisp"] and sum(mcolors.to_rgb(lighter)) > sum(mcolors.to_rgb(own))
    assert group_colors(swept.assign(method="new"), ["crisp,0.25", "crisp,1"])[1] == mcolors.to_hex("C0")


def test_costs_read_in_units():
    from analysis.stats import format_quantity

    assert format_quantity(3.518e9, "FLOP") == "3.52 GFLOP" and format_quantity(2.997e11, "FLOP") == "300 GFLOP"
    assert format_quantity(3.004e-7, "hours") == "< 0.01 s" and format_quantity(5e-6, "hours") == "0.018 s" and format_quantity(0.2, "hours") == "12 min"
    assert format_quantity(5.0, "hours") == "5 h" and format_quantity(1.2e6, "") == "1.2 M" and format_quantity(2016, "") == "2.02 k"
    assert format_quantity(0.0, "FLOP") == "0" and format_quantity(float("nan"), "hours") == "-"


def test_embedding_flops_follow_the_embedder():
    from crisp_pl.config import EmbedConfig
    from crisp_pl.costs import embedding_flops

    sbert, lsi = embedding_flops(1000, EmbedConfig()), embedding_flops(1000, EmbedConfig(kind="lsi"))
    assert sbert > 1000 * lsi > 0 and embedding_flops(1000, EmbedConfig(kind="random")) == 0  # the ablation's costs differ
