"""Training with Lightning: the detector's LightningModule and DataModule, and what detector and
classifier training share (schedules, EMA, the non-finite-loss stop, checkpointing, the CLI base)."""
