"""ExecuTorch export of a classifier checkpoint: the same logits under ExecuTorch's runtime, the classifier
metadata in the sidecar, and tools/export.py dispatching a classifier checkpoint to it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("executorch")

from classifier_helpers import load_tool  # noqa: E402

from detector.checkpoint import MODEL_PREFIX, atomic_save  # noqa: E402
from detector.deploy.executorch_export import sidecar_path  # noqa: E402
from detector.pretrain import (  # noqa: E402
    MobileNetV2Classifier,
    export_classifier_executorch,
    load_classifier,
)
from detector.pretrain.model import CLASSIFIER_KEY, classifier_meta  # noqa: E402

NAMES = ["blue", "green", "red", "yellow"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-0.35, 48 px classifier checkpoint: random weights, non-trivial BatchNorm statistics (no
    training needed to compare two runtimes)."""
    torch.manual_seed(0)
    model = MobileNetV2Classifier(num_classes=len(NAMES), width_mult=0.35)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(model.classifier[1].weight, 0, 0.5)  # logits well away from zero
    path = tmp_path_factory.mktemp("classifier") / "classifier.ckpt"
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, CLASSIFIER_KEY: classifier_meta(model.eval(), NAMES, 48)}, path)
    return path


def test_tools_export_writes_a_program_with_pytorch_logits_and_sidecar(checkpoint: Path, tmp_path: Path,
                                                                       capsys) -> None:
    """tools/export.py sends a classifier checkpoint to export_classifier_executorch (one lowering serves
    the whole test: it is the slow part)."""
    from executorch.runtime import Runtime

    output = tmp_path / "classifier.pte"
    assert load_tool("export").main(["--checkpoint", str(checkpoint), "--output", str(output),
                                     "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "classifier" in out and str(output) in out and str(sidecar_path(output)) in out
    model, _ = load_classifier(checkpoint)
    method = Runtime.get().load_program(output).load_method("forward")
    for seed in range(3):
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
        (logits,) = method.execute([x])
        with torch.no_grad():
            expected = model(x)
        assert logits.shape == (1, len(NAMES))
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))

    meta = json.loads(sidecar_path(output).read_text())
    assert meta["task"] == "classification" and meta["class_names"] == NAMES
    assert meta["image_size"] == [64, 64] and meta["num_classes"] == 4
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["runtime"] == "executorch" and meta["int8"] is False and meta["outputs"] == ["logits"]
    assert meta["input"] == {"name": "images", "shape": [1, 3, 64, 64], "dtype": "float32"}


def test_classifier_errors(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration images"):
        export_classifier_executorch(checkpoint, tmp_path / "c.pte", int8=True)
    with pytest.raises(SystemExit):
        load_tool("export").main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "c.pte"), "--with-nms"])
    assert not (tmp_path / "c.pte").exists()
