"""Which weights a run keeps: the EMA copy or the trained (raw) weights, whichever scores better.

An EMA whose time constant is long for the run (a fixed decay of 0.9998 averages over ~5,000 steps;
a custom fine-tune is a few hundred) is mostly the initial weights, and would silently give users a
model that finds nothing (issue #36). So :class:`detector.training.module.DetectorModule` validates
both copies, logs both, and records the better in every checkpoint::

    checkpoint["detector"]["weights"] = {"use": "ema" | "model", "val_mAP_ema": float,
                                         "val_mAP_raw": float, "global_step": int}

:func:`detector.checkpoint.model_state_dict` loads ``use``, so every tool (eval, predict, export,
``init_checkpoint``) gets the better copy. :class:`FinalWeightsComparison` repeats the comparison at the
end of ``fit`` when the last validation was at an earlier step, so ``last.ckpt`` records it for its
own weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

__all__ = ["EMA_FAR_WORSE", "FinalWeightsComparison", "WeightsChoice"]

# Below the raw weights by more than this mAP@[.5:.95], the EMA gets a warning: a tie within
# validation noise is no news, a point of AP is (the EMA is slower than the run is long).
EMA_FAR_WORSE = 0.01


@dataclass(frozen=True)
class WeightsChoice:
    """The comparison at one step: ``use`` is ``"ema"`` (ties go to the EMA) or ``"model"`` (raw)."""

    use: str
    val_mAP_ema: float
    val_mAP_raw: float
    global_step: int

    @classmethod
    def compare(cls, map_ema: float, map_raw: float, global_step: int) -> WeightsChoice:
        return cls("ema" if map_ema >= map_raw else "model", float(map_ema), float(map_raw), int(global_step))

    @property
    def ema_far_worse(self) -> bool:
        return self.val_mAP_raw - self.val_mAP_ema > EMA_FAR_WORSE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> WeightsChoice:
        return cls(str(entry["use"]), float(entry["val_mAP_ema"]), float(entry["val_mAP_raw"]), int(entry["global_step"]))

    def describe(self) -> str:
        """One line for the run's log."""
        kept = "EMA" if self.use == "ema" else "raw (trained, non-EMA)"
        line = (f"weights at step {self.global_step}: val mAP EMA {self.val_mAP_ema:.4f}, raw {self.val_mAP_raw:.4f}; "
                f"checkpoints keep both and the tools load the {kept} weights")
        if self.ema_far_worse:
            line += (f". WARNING: the EMA is {self.val_mAP_raw - self.val_mAP_ema:.3f} mAP below the raw weights: "
                     "its decay is too slow for this run (lower --model.ema_decay or set --model.ema_warmup_steps)")
        return line


class FinalWeightsComparison(Callback):
    """At the end of ``fit``, compare the EMA and the raw weights on the validation set unless the last
    validation already did at this step (``check_val_every_n_epoch`` and ``max_steps`` rarely meet).
    Runs before :class:`detector.training.callbacks.RunCheckpoint` writes the final ``last.ckpt``
    (Lightning calls checkpoint callbacks last)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        compare = getattr(pl_module, "compare_weights_now", None)
        if compare is not None:
            compare()
