"""Train or validate the MobileNetV2 classifier (backbone pre-training) on ImageFolder-layout data:

    python tools/train_classifier.py fit --config configs/classifier_mobilenetv2.yaml \
        --data.train_dir DIR --data.val_dir DIR
    python tools/train_classifier.py validate --config configs/classifier_mobilenetv2.yaml \
        --data.val_dir DIR --ckpt_path RUN/checkpoints/best.ckpt

A LightningCLI over ``detector.pretrain``: ``--data.*``, ``--model.*`` and ``--trainer.*``;
``fit --ckpt_path RUN/checkpoints/last.ckpt`` resumes a run. The result is a backbone for the
detector: ``tools/train.py fit ... --model.pretrained_backbone RUN/checkpoints/best.ckpt`` (same
``width_mult``).
"""
import sys

from detector.pretrain.cli import main
from detector.training.cli import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
