"""Train or validate a detector: ``python tools/train.py fit --config configs/NAME.yaml [overrides]``.

A LightningCLI over ``detector.training``: ``--data.*``, ``--model.*`` and ``--trainer.*`` as
documented in the README; ``fit --ckpt_path DIR/checkpoints/last.ckpt`` resumes a run.
"""
from detector.training.cli import main

if __name__ == "__main__":
    main()
