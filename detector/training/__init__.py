"""Training with Lightning: the LightningModule, the DataModule, callbacks and the CLI."""
from detector.training.datamodule import DetectionDataModule
from detector.training.module import DetectorModule

__all__ = ["DetectionDataModule", "DetectorModule"]
