"""detector.training.reference: torchvision's recipe reads the project's data without changing it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from detector.data.io import load_image
from detector.data.synthetic import SyntheticConfig, make_synthetic
from detector.labels import LabelMap
from detector.training.reference import reference_loader, reference_model


def test_eval_loader_gives_the_images_and_boxes_as_they_are(tmp_path: Path) -> None:
    make_synthetic(tmp_path, num_train=0, num_val=3, seed=2, config=SyntheticConfig(image_size=96))
    coco = json.loads((tmp_path / "val.json").read_text())
    label_map = LabelMap.from_categories(coco["categories"])
    loader = reference_loader(tmp_path / "val", tmp_path / "val.json", label_map, train=False, batch_size=2,
                              num_workers=0)
    seen = 0
    for images, targets in loader:
        for image, target in zip(images, targets):
            info = next(im for im in coco["images"] if im["id"] == target["image_id"])
            expected = torch.from_numpy(load_image(tmp_path / "val" / info["file_name"])).permute(2, 0, 1) / 255
            torch.testing.assert_close(image, expected)  # float 0..1 at the original size: the model resizes
            anns = [a for a in coco["annotations"] if a["image_id"] == target["image_id"]]
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
            np.testing.assert_allclose(target["boxes"].numpy(), boxes, rtol=0, atol=1e-4)
            assert target["labels"].tolist() == [label_map.label_of_category(a["category_id"]) for a in anns]
            seen += 1
    assert seen == 3


def test_train_loader_boxes_stay_inside_the_cropped_images(tmp_path: Path) -> None:
    make_synthetic(tmp_path, num_train=6, num_val=0, seed=3, config=SyntheticConfig(image_size=96))
    label_map = LabelMap.from_categories(json.loads((tmp_path / "train.json").read_text())["categories"])
    torch.manual_seed(0)
    loader = reference_loader(tmp_path / "train", tmp_path / "train.json", label_map, train=True, batch_size=3,
                              num_workers=0, seed=0)
    for images, targets in loader:
        assert len(images) == 3
        for image, target in zip(images, targets):
            h, w = image.shape[1:]
            assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            b = target["boxes"]
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert len(target["labels"]) == len(b)


def test_reference_model_resizes_to_its_input_size() -> None:
    model = reference_model(num_classes=3, image_size=160).eval()
    batch, _ = model.transform([torch.rand(3, 90, 120)])
    assert batch.tensors.shape == (1, 3, 160, 160) and batch.image_sizes == [(160, 160)]
    assert model.head.classification_head.num_columns == 3  # background + 2 classes
