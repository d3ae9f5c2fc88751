"""The CLI base of every training tool (:class:`RunCLI`), and ``tools/train.py``'s :class:`DetectorCLI`
over :class:`DetectorModule` and :class:`DetectionDataModule`."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from detector.checkpoint import load_data
from detector.errors import report_user_errors
from detector.modeling.ssdlite import resolve_config
from detector.training.callbacks import AtomicCheckpointIO, RunCheckpoint
from detector.training.datamodule import DetectionDataModule
from detector.training.module import DetectorModule
from detector.training.mosaic import CloseMosaic

__all__ = ["DetectorCLI", "RunArgumentParser", "RunCLI", "main", "run_cli", "run_tool"]


class RunArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, answering a bad option with one ``error:`` line (its message names the
    option) and a pointer to ``--help``, instead of the full usage before it."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("DETECTOR_TRACEBACK"):
            super().error(message, ex)
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        # jsonargparse nests the cause under its own headline: the last lines say what is wrong.
        detail = " | ".join(lines[-3:]) if len(lines) > 3 else " | ".join(lines)
        sys.stderr.write(f"error: {detail} (--help lists the options)\n")
        sys.exit(2)


class RunCLI(LightningCLI):
    """A LightningCLI whose run lives in ``default_root_dir``: ``checkpoints/best.ckpt`` (by
    ``MONITOR``) and ``checkpoints/last.ckpt`` (:class:`RunCheckpoint`, options ``--checkpoint.*``),
    CSV and TensorBoard logs in ``csv/`` and ``tensorboard/``, checkpoints written atomically and read
    as data only. The data's ``image_size`` is linked to the model's; subclasses link the rest."""

    MONITOR: str = "val/mAP"
    # Set when resuming or validating from --ckpt_path, whose file holds every weight: options that
    # would load weights from elsewhere (a file that may be gone, a download) are switched off.
    RESUME_OVERRIDES: dict[str, Any] = {}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": self.MONITOR})
        parser.link_arguments("data.image_size", "model.image_size")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("last", "best", "hpc", "registry") and not Path(path).is_file():
            raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")
        if path and Path(path).is_file():
            # LightningCLI reads the file's hyperparameters next (as data only, but with torch's
            # message): check it here first, so a file that needs code fails with an error naming it.
            load_data(path)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI applies the checkpoint's hyperparameters over the command line, the weight
        # sources included: resuming would need the init checkpoint (or the download) again.
        super()._parse_ckpt_path()
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (path and Path(path).is_file()):
            return
        for key, value in self.resume_overrides(load_data(path)).items():
            self.config[subcommand][key] = value

    def resume_overrides(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Config values set when running from ``checkpoint`` (``--ckpt_path``)."""
        return dict(self.RESUME_OVERRIDES)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        root = config.get("default_root_dir") or os.getcwd()
        if config.get("logger") in (None, True):
            kwargs["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tensorboard")]
        if not config.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def run_cli(cli: type[RunCLI], model: type[LightningModule], data: type[LightningDataModule],
            args: list[str] | None, run: bool, default_root_dir: str) -> RunCLI:
    """``cli`` over ``model`` and ``data``: seed 0 by default, the full config saved beside the run."""
    return cli(
        model,
        data,
        args=args,
        run=run,
        parser_class=RunArgumentParser,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        # Lightning's 'auto' would pick MPS/GPU when present; 'auto' is right for users, so keep it.
        trainer_defaults={"default_root_dir": default_root_dir},
    )


def run_tool(main_fn: Any, args: list[str] | None = None) -> int:
    """A training tool's entry point: ``main_fn(args)``, bad input answered by one ``error:`` line
    (:func:`detector.errors.report_user_errors`)."""
    outcome = report_user_errors(lambda: main_fn(args))
    return outcome if isinstance(outcome, int) else 0


def _label_map_of(data: DetectionDataModule) -> dict[str, list]:
    return data.label_map.to_dict()


def _preset_config(preset: str) -> dict[str, Any]:
    from detector.modeling.ssdlite import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"--model.preset {preset!r} is not a preset; the presets are {', '.join(sorted(PRESETS))}")
    return resolve_config(preset)


def _preset_mean(preset: str) -> list[float]:
    return list(_preset_config(preset)["mean"])


def _preset_std(preset: str) -> list[float]:
    return list(_preset_config(preset)["std"])


class DetectorCLI(RunCLI):
    """Links the data to the model: image size, and the label map of the training annotations; adds
    :class:`CloseMosaic` when the data asks for ``close_mosaic``."""

    MONITOR = "val/mAP"
    RESUME_OVERRIDES = {"model.init_checkpoint": None, "model.pretrained_backbone": "none"}

    def resume_overrides(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        overrides = super().resume_overrides(checkpoint)
        label_map = (checkpoint.get("detector") or {}).get("label_map")
        if label_map:  # the classes its weights predict, whatever the annotation files number them
            overrides["data.label_map"] = label_map
        return overrides

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        # The number of classes and the label map come from the training annotations, never by hand.
        parser.link_arguments("data", "model.label_map", compute_fn=_label_map_of, apply_on="instantiate")
        # The data is normalised as the model's recipe expects ([-1, 1] for torchvision's SSDLite).
        parser.link_arguments("model.preset", "data.mean", compute_fn=_preset_mean)
        parser.link_arguments("model.preset", "data.std", compute_fn=_preset_std)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        close_mosaic = getattr(self.datamodule, "close_mosaic", 0)
        if close_mosaic:
            trainer.callbacks.append(CloseMosaic(close_mosaic))
        return trainer


def main(args: list[str] | None = None, run: bool = True) -> DetectorCLI:
    return run_cli(DetectorCLI, DetectorModule, DetectionDataModule, args, run, "runs/default")
