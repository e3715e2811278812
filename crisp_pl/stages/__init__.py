"""The cached stages a grid point passes through, one module each:

    data.py        corpus -> tokenizer -> pool and task windows -> embeddings -> tree -> labels  (`prepare` -> Prepared)
    selection.py   a registered method's groups                                   (crisp_pl.selection)
    coverage.py    how well the pool can serve the specialist set, before training (crisp_pl.coverage)
    training.py    pretraining on the groups; fine-tuning on the specialist set;   (crisp_pl.training)
                   the base of continued pretraining
    evaluation.py  test perplexity; MCQ accuracy through lm-eval                  (crisp_pl.evaluate)
    point.py       `run_point`: the list of stages one grid point passes through, and its metrics
"""

from crisp_pl.stages.data import Prepared, Stores, prepare, specialist_subset
from crisp_pl.stages.evaluation import eval_stage
from crisp_pl.stages.point import PointResult, run_point
from crisp_pl.stages.selection import selection_cost, selection_stage
from crisp_pl.stages.training import TrainRecord, base_stage, finetune_stage, train_stage

__all__ = ["PointResult", "Prepared", "Stores", "TrainRecord", "base_stage", "eval_stage", "finetune_stage", "prepare", "run_point",
           "selection_cost", "selection_stage", "specialist_subset", "train_stage"]
