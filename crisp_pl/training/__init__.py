"""Training's one home: the GPT LightningModule, the DataModule over a selection, the schedule
helpers (plain functions) and the Trainer factory. Only this package imports Lightning."""
