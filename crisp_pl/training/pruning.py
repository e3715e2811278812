"""Optuna pruning as a Lightning callback (crisp_pl/tune.py's searches): report each validation loss
to the trial and stop the run when the pruner says it cannot win. Lightning lives in training/ only,
so the callback does too."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class PruneOnValidation(Callback):
    def __init__(self, trial):
        self.trial = trial

    def on_validation_end(self, trainer, module) -> None:
        import optuna

        loss = trainer.callback_metrics.get("val/loss")
        if loss is None or trainer.sanity_checking:
            return
        self.trial.report(float(loss), step=trainer.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val/loss {float(loss):.4f} at step {trainer.global_step}")
