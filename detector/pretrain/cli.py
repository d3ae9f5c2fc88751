"""``tools/train_classifier.py``: LightningCLI over :class:`ClassifierModule` and :class:`ClassifierDataModule`.

The run lives in ``--trainer.default_root_dir`` as a detection run does (:class:`RunCLI`):
``checkpoints/best.ckpt`` (by ``val/top1``) and ``checkpoints/last.ckpt`` written atomically, CSV and
TensorBoard logs in ``csv/`` and ``tensorboard/``, the full config beside them; ``fit --ckpt_path
.../last.ckpt`` resumes.
"""
from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser

from detector.pretrain.data import ClassifierDataModule
from detector.pretrain.module import ClassifierModule
from detector.training.cli import RunCLI, run_cli

__all__ = ["ClassifierCLI", "main"]


def _class_names_of(data: ClassifierDataModule) -> list[str]:
    return list(data.class_names)


class ClassifierCLI(RunCLI):
    """Links the data to the model: image size, and the class names of the training folders."""

    MONITOR = "val/top1"
    RESUME_OVERRIDES = {"model.pretrained": "none"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        # The classes come from the training folders, never by hand.
        parser.link_arguments("data", "model.class_names", compute_fn=_class_names_of, apply_on="instantiate")


def main(args: list[str] | None = None, run: bool = True) -> ClassifierCLI:
    return run_cli(ClassifierCLI, ClassifierModule, ClassifierDataModule, args, run, "runs/classifier")
