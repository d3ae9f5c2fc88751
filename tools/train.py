"""Train or validate a detector: ``python tools/train.py fit --config configs/NAME.yaml [overrides]``.

A LightningCLI over ``detector.training``: ``--data.*``, ``--model.*`` and ``--trainer.*`` as
documented in the README; ``fit --ckpt_path DIR/checkpoints/last.ckpt`` resumes a run. Bad input is
answered with one ``error:`` line (``DETECTOR_TRACEBACK=1`` shows the traceback).
"""
import sys

from detector.training.cli import main, run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
