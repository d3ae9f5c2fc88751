"""Tiny ImageFolder sets of solid colours, and the CLI arguments of a tiny, fast classifier run."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

# Distinct hues that colour jitter (brightness / contrast / saturation, hue untouched) cannot confuse.
COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (30, 60, 220),
    "green": (40, 200, 60),
    "red": (220, 40, 40),
    "yellow": (230, 220, 40),
}


def colour_image(rgb: tuple[int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """``size x size x 3`` uint8: ``rgb`` shifted a little per image, plus per-pixel noise."""
    base = np.asarray(rgb, dtype=np.float32) + rng.uniform(-25, 25, size=3)
    pixels = base + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_colour_folder(
    root: Path, per_class: int, size: int = 40, seed: int = 0, classes: tuple[str, ...] = tuple(COLOURS)
) -> Path:
    """``root/<colour>/<i>.png``, ``per_class`` images each (sizes vary a little around ``size``)."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(size + rng.integers(-4, 5))
            Image.fromarray(colour_image(COLOURS[name], side, rng)).save(folder / f"{i:03d}.png")
    return root


def tiny_args(train: Path | None, val: Path | None, run_dir: Path, **overrides: object) -> list[str]:
    """Arguments of a run small enough for a test: width 0.35 at 48 px, batch 16."""
    options: dict[str, object] = {
        "data.train_dir": train,
        "data.val_dir": val,
        "data.batch_size": 16,
        "data.num_workers": 0,
        "data.image_size": 48,
        "model.width_mult": 0.35,
        "model.lr": 0.02,
        "model.bn_momentum": 0.3,  # running statistics must catch up within a few dozen steps
        "model.warmup_steps": 3,
        **_training.quiet_cpu_trainer(run_dir, max_epochs=4),
    }
    options.update(overrides)
    return [f"--{key}={value}" for key, value in options.items() if value is not None]


def _import_file(name: str, path: Path) -> ModuleType:
    """Import ``path`` (outside this folder's import path) as module ``name``, once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (not a package) as a module."""
    return _import_file(f"tools_{name}_classifier", ROOT / "tools" / f"{name}.py")


# The detector tests' trainer options and crash callback serve the classifier's too.
_training = _import_file("training_helpers", ROOT / "tests" / "training" / "training_helpers.py")
SimulatedCrash = _training.SimulatedCrash
CrashAtEpoch = _training.CrashAtEpoch
