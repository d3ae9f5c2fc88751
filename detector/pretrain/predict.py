"""Top-k classes per image from a classifier checkpoint, a zoo classifier or an exported classifier.

    predictor = ClassifierPredictor.from_checkpoint("runs/cls/checkpoints/best.ckpt")
    predictor.predict(["a.jpg", image_array])   # [[("cat", 0.91), ("dog", 0.05), ...], ...]
    ClassifierPredictor.from_checkpoint("zoo:mobilenet_v2_1.0_224_imagenet_quant")  # TF's ImageNet MobileNetV2
    ClassifierPredictor.from_checkpoint("classifier.int8.pte")  # tools/export.py's ONNX or ExecuTorch files

Each image is decoded as training's validation images are (:func:`detector.data.io.load_image`,
shorter side to ``image_size / 0.875``, centre crop, ImageNet normalisation).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from detector.checkpoint import resolve_device
from detector.data.io import ImageReadError, load_image
from detector.files import atomic_write_text
from detector.pretrain.model import MobileNetV2Classifier, load_classifier
from detector.pretrain.transforms import build_classifier_transforms

__all__ = ["ClassifierPredictor", "ExportedClassifier", "is_classifier_export", "predict_images"]

ImageInput = Union[str, "PathLike[str]", np.ndarray]
TopK = list[tuple[str, float]]


def _export_metadata(path: Path) -> dict[str, Any]:
    """A classifier export's metadata: the ONNX file's own, or an ExecuTorch program's sidecar."""
    if path.suffix.lower() == ".pte":
        from detector.deploy.executorch_export import read_sidecar

        document = read_sidecar(path)
        if "class_names" not in document:
            raise ValueError(f"{path}: not a classifier export (no class_names in its sidecar)")
        return document
    from detector.deploy.metadata import read_classifier_metadata

    return read_classifier_metadata(path)


def is_classifier_export(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is ``tools/export.py``'s ONNX or ExecuTorch file of a classifier."""
    path = Path(path)
    if path.suffix.lower() not in (".onnx", ".pte") or not path.is_file():
        return False
    try:
        return _export_metadata(path).get("task") == "classification"
    except Exception:  # not an export this project reads (protobuf's DecodeError for a text file named .onnx)
        return False


class ExportedClassifier(nn.Module):
    """An exported classifier (ONNX Runtime for ``.onnx``, ExecuTorch for ``.pte``) called as the
    PyTorch one is: ``images [B, 3, S, S]`` normalised -> ``logits [B, C]``, on the CPU.

    ExecuTorch programs take one image: a batch runs image by image.
    """

    def __init__(self, path: str | PathLike[str], num_threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.suffix.lower() == ".pte":
            from detector.deploy.executorch_runtime import load_program_method

            self._method = load_program_method(self.path)
            self._session = None
        else:
            from detector.deploy.onnx_runtime import create_session

            self._session = create_session(self.path, num_threads=num_threads)
            self._input = self._session.get_inputs()[0].name
            self._method = None

    def forward(self, images: Tensor) -> Tensor:
        batch = images.detach().to("cpu", torch.float32).contiguous()
        if self._method is not None:
            return torch.cat([self._method.execute([image.unsqueeze(0).contiguous()])[0] for image in batch])
        if self._session.get_inputs()[0].shape[0] == 1:  # exported without a dynamic batch
            parts = [self._session.run(None, {self._input: image[None].numpy()})[0] for image in batch]
            return torch.from_numpy(np.concatenate(parts))
        return torch.from_numpy(self._session.run(None, {self._input: batch.numpy()})[0])


class ClassifierPredictor:
    """A classifier in eval mode with its pre-processing and class names.

    Args:
        model: the classifier (put in eval mode here).
        class_names: logit ``i``'s name.
        image_size: the square input side.
        mean, std: normalisation of 0..1 RGB.
        device: where the model runs.
    """

    def __init__(
        self,
        model: MobileNetV2Classifier,
        class_names: Sequence[str],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.transform = build_classifier_transforms(self.image_size, train=False, mean=mean, std=std)

    @classmethod
    def from_checkpoint(cls, path: str | PathLike[str], device: str = "cpu") -> ClassifierPredictor:
        """Load a classifier checkpoint as data only (EMA weights when present; a pickle that would run
        code is refused with ``ValueError``), a zoo classifier (``zoo:NAME``) or a classifier export
        (``.onnx`` / ``.pte``, run on the CPU); ``device`` ``"auto"`` picks CUDA if any."""
        if Path(path).suffix.lower() in (".onnx", ".pte"):
            meta = _export_metadata(Path(path))
            size = meta["image_size"][0] if isinstance(meta["image_size"], list) else meta["image_size"]
            return cls(ExportedClassifier(path), meta["class_names"], size, meta["mean"], meta["std"], "cpu")
        model, meta = load_classifier(path)
        return cls(model, meta["class_names"], meta["image_size"], meta["mean"], meta["std"], resolve_device(device))

    def preprocess(self, images: Sequence[ImageInput]) -> Tensor:
        """Paths or ``HxWx3`` uint8 RGB arrays -> ``FloatTensor[B, 3, S, S]`` normalised, on the device."""
        arrays = [image if isinstance(image, np.ndarray) else load_image(image) for image in images]
        return torch.stack([self.transform(image=array)["image"] for array in arrays]).to(self.device)

    @torch.no_grad()
    def probabilities(self, images: Sequence[ImageInput]) -> Tensor:
        """``FloatTensor[B, C]`` softmax probabilities, on the CPU."""
        return self.model(self.preprocess(images)).softmax(dim=1).cpu()

    def predict(self, images: Sequence[ImageInput], k: int = 5) -> list[TopK]:
        """Per image, the ``min(k, C)`` most probable ``(class name, probability)``, most probable first."""
        probs = self.probabilities(images)
        values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(self.class_names[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
                for row_p, row_i in zip(values, indices)]


def predict_images(
    checkpoint: str | PathLike[str],
    inputs: Sequence[tuple[Path, str]],
    output: str | PathLike[str] | None = None,
    k: int = 5,
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Print the top-``k`` classes of each image, one line per image
    (``NAME: class 0.912, class 0.051, ...``), and write them to ``OUTPUT/classifications.json``
    (``[{"file_name", "top": [{"class", "score"}, ...]}]``) when ``output`` is given.

    Args:
        inputs: ``(path, name)`` pairs, as ``tools/predict.py``'s ``find_images`` returns them.

    Returns:
        An exit status: 0 when at least one image was classified.
    """
    predictor = ClassifierPredictor.from_checkpoint(checkpoint, device=device)
    results, unreadable = [], []
    for start in range(0, len(inputs), batch_size):
        loaded = []
        for path, name in inputs[start:start + batch_size]:
            try:
                loaded.append((load_image(path), name))
            except ImageReadError as err:
                unreadable.append(str(path))
                print(f"skipped: {err}", file=sys.stderr)
        if not loaded:
            continue
        for (_, name), top in zip(loaded, predictor.predict([image for image, _ in loaded], k=k)):
            print(f"{name}: " + ", ".join(f"{label} {score:.3f}" for label, score in top))
            entries = [{"class": label, "score": round(score, 5)} for label, score in top]
            results.append({"file_name": name, "top": entries})
    if output is not None:
        atomic_write_text(Path(output) / "classifications.json", json.dumps(results, indent=1))
    if unreadable:
        print(f"{len(unreadable)} unreadable file(s) skipped: {', '.join(unreadable)}", file=sys.stderr)
    return 0 if results else 1
