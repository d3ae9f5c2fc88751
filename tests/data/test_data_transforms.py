from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2

from data_helpers import save_rgb, write_coco
from detector.data.coco import CocoDetection, detection_collate, worker_init_fn
from detector.data.transforms import PIPELINES, MinIoURandomCrop, ZoomOut, build_transforms

SIZE = 64


def scene() -> tuple[np.ndarray, np.ndarray, list[list[float]], list[int]]:
    """A 120x160 image with two filled rectangles; the mask holds each one's label (1, 2)."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = (40, 90, 40)
    mask = np.zeros((120, 160), np.uint8)
    boxes = [[20.0, 15.0, 70.0, 60.0], [90.0, 50.0, 150.0, 110.0]]
    for label, (x1, y1, x2, y2) in enumerate(boxes, start=1):
        image[int(y1) : int(y2), int(x1) : int(x2)] = (250, 250, 250) if label == 1 else (250, 30, 30)
        mask[int(y1) : int(y2), int(x1) : int(x2)] = label
    return image, mask, boxes, [1, 2]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_boxes_stay_on_their_pixels(pipeline: str) -> None:
    """Every transform moves the mask (the drawn rectangles) and the boxes together."""
    image, mask, boxes, labels = scene()
    extra = {}
    if pipeline == "mosaic":
        # The other three cells: the same scene with labels 3..8, so every label marks one rectangle.
        extra["mosaic_metadata"] = [
            {"image": image, "mask": np.where(mask > 0, mask + 2 * k, 0).astype(np.uint8), "bboxes": boxes,
             "labels": [label + 2 * k for label in labels]} for k in (1, 2, 3)]
    t = build_transforms(pipeline, SIZE, train=True, seed=1)
    for _ in range(40):
        out = t(image=image, mask=mask, bboxes=boxes, labels=labels, **extra)
        assert out["image"].shape == (3, SIZE, SIZE) and out["image"].dtype == torch.float32
        m = out["mask"].numpy()
        for box, label in zip(out["bboxes"], out["labels"]):
            x1, y1, x2, y2 = box
            # No box leaves the image.
            assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
            ys, xs = np.nonzero(m == int(label))
            assert len(xs), f"box {box} of label {label} frames no pixel of its rectangle"
            # The box frames its rectangle's visible pixels, to within the mask's nearest-neighbour resize.
            assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.5), (box, label)


def test_eval_pipeline_only_resizes() -> None:
    image, _, boxes, labels = scene()
    out = build_transforms("ssd", (60, 80), train=False)(image=image, bboxes=boxes, labels=labels)
    assert out["image"].shape == (3, 60, 80)
    expected = np.array(boxes) * [0.5, 0.5, 0.5, 0.5]  # 160x120 -> 80x60
    assert np.allclose(out["bboxes"], expected, atol=1e-4)
    assert [int(v) for v in out["labels"]] == labels
    # Normalised with ImageNet statistics: (40 / 255 - 0.485) / 0.229 in the red channel's background.
    assert out["image"][0, 0, 0].item() == pytest.approx((40 / 255 - 0.485) / 0.229, abs=1e-3)


def test_seed_makes_a_pipeline_repeatable() -> None:
    image, _, boxes, labels = scene()
    runs = []
    for seed in (7, 7, 8):
        t = build_transforms("ssd", SIZE, train=True, seed=seed)
        runs.append([t(image=image, bboxes=boxes, labels=labels) for _ in range(5)])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a["image"], b["image"]) and np.array_equal(a["bboxes"], b["bboxes"])
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(runs[0], runs[2]))


def test_zoom_out_places_image_on_mean_canvas() -> None:
    z = ZoomOut(max_scale=4.0, fill=(1, 2, 3), p=1.0)
    img = np.full((10, 20, 3), 200, np.uint8)
    params = {"canvas": (40, 80), "offset": (10, 5), "shape": img.shape}
    out = z.apply(img, **params)
    assert out.shape == (40, 80, 3)
    assert (out[5:15, 10:30] == 200).all() and out[0, 0].tolist() == [1, 2, 3]
    # A normalised box covering the whole 20x10 image -> pixels [10, 5, 30, 15] on the 80x40 canvas.
    box = z.apply_to_bboxes(np.array([[0.0, 0.0, 1.0, 1.0, 4.0]]), **params)
    assert np.allclose(box, [[10 / 80, 5 / 40, 30 / 80, 15 / 40, 4.0]])


def test_min_iou_crop_honours_its_threshold() -> None:
    """With the single option 0.7, IoU(box, crop) >= 0.7 for every accepted crop (hand-computed IoU)."""
    image = np.zeros((100, 100, 3), np.uint8)
    box = [20.0, 20.0, 80.0, 80.0]
    t = A.Compose([MinIoURandomCrop(min_ious=(0.7,), whole_image=False)],
                  bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=3)
    cropped = 0
    for _ in range(30):
        out = t(image=image, bboxes=[box], labels=[1])
        h, w = out["image"].shape[:2]
        assert len(out["bboxes"]) == 1  # the only box has its centre inside an accepted crop
        x1, y1, x2, y2 = out["bboxes"][0]
        inter = (x2 - x1) * (y2 - y1)  # the box clipped to the crop
        iou = inter / (60 * 60 + h * w - inter)
        assert iou >= 0.7 - 1e-6
        cropped += (h, w) != (100, 100)
    assert cropped > 0


def test_min_iou_crop_drops_boxes_whose_centre_is_outside() -> None:
    crop = MinIoURandomCrop()
    # Image 100x100, crop x 0..50: the first box's centre (x=40) is inside, the second's (x=60) is not.
    boxes = np.array([[0.3, 0.1, 0.5, 0.3, 1.0], [0.45, 0.1, 0.75, 0.3, 2.0]])
    out = crop.apply_to_bboxes(boxes, crop_coords=(0, 0, 50, 100), shape=(100, 100, 3))
    assert out[:, 4].tolist() == [1.0]
    assert np.allclose(out[0, :4], [0.6, 0.1, 1.0, 0.3])


def _loader_dataset(tmp_path: Path) -> CocoDetection:
    image, _, boxes, _ = scene()
    (tmp_path / "img").mkdir()
    images = []
    for i in range(1, 5):
        save_rgb(tmp_path / "img" / f"{i}.png", image)
        images.append({"id": i, "file_name": f"{i}.png", "width": 160, "height": 120})
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [20, 15, 50, 45], "iscrowd": 0} for i in range(1, 5)]
    path = write_coco(tmp_path / "a.json", images, anns, [{"id": 1, "name": "thing"}])
    return CocoDetection(tmp_path / "img", path, build_transforms("ssd", 32, train=True, seed=0))


def _first_items(dataset: CocoDetection, init, seed: int) -> list[torch.Tensor]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=detection_collate,
                                         worker_init_fn=init, generator=torch.Generator().manual_seed(seed))
    return [images[0] for images, _ in loader]


def test_workers_do_not_repeat_each_others_randomness(tmp_path: Path) -> None:
    dataset = _loader_dataset(tmp_path)  # four copies of one image: only the augmentation differs
    items = _first_items(dataset, worker_init_fn, seed=0)
    # Batches 0 and 1 come from workers 0 and 1; each worker's first draw must differ.
    assert not torch.equal(items[0], items[1])
    assert len({tuple(x.flatten()[:64].tolist()) for x in items}) == 4
    # Without reseeding, both forked workers hold copies of one generator and repeat each other.
    plain = _first_items(dataset, None, seed=0)
    assert torch.equal(plain[0], plain[1])
    # And with the same loader seed, the workers' streams are repeatable.
    again = _first_items(dataset, worker_init_fn, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(items, again))


# --- mosaic: the dataset supplies the other cells ---------------------------------------------------

COLOURS = {1: (250, 30, 30), 2: (30, 250, 30), 3: (30, 30, 250), 4: (250, 250, 30)}


def _coloured_dataset(tmp_path: Path, transform: A.Compose) -> CocoDetection:
    """Four 60x80 images, each one solid colour with one box of its own label (image id = label)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    images, anns = [], []
    for i, colour in COLOURS.items():
        save_rgb(tmp_path / "img" / f"{i}.png", np.full((60, 80, 3), colour, np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "width": 80, "height": 60})
        anns.append({"id": i, "image_id": i, "category_id": i, "bbox": [10 + i, 5 + i, 40, 30], "iscrowd": 0})
    categories = [{"id": i, "name": f"c{i}"} for i in COLOURS]
    return CocoDetection(tmp_path / "img", write_coco(tmp_path / "m.json", images, anns, categories), transform)


def _plain_mosaic(seed: int = 0) -> A.Compose:
    """Mosaic alone (no colour change) on a black canvas, so pixels tell which image they came from."""
    return A.Compose([A.Mosaic(grid_yx=(2, 2), target_size=(60, 80), cell_shape=(60, 80), fill=0, p=1.0),
                      ToTensorV2()],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_width=1.0,
                                              min_height=1.0), seed=seed)


def test_mosaic_cells_come_from_other_images_with_their_boxes(tmp_path: Path) -> None:
    np.random.seed(0)
    dataset = _coloured_dataset(tmp_path, _plain_mosaic())
    mixed = 0
    for index in range(len(dataset)):
        for _ in range(5):
            image, target = dataset[index]
            pixels = image.permute(1, 2, 0).numpy()
            assert image.shape == (3, 60, 80)
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                inside = pixels[y1:y2, x1:x2].reshape(-1, 3)
                # Every box lands on pixels of its own image's colour: boxes moved with their images.
                assert len(inside) and (inside == COLOURS[label]).all(), (index, box, label)
            mixed += len(set(target["labels"].tolist()) - {target["image_id"]}) > 0
    assert mixed > 0  # other images' boxes do appear


def test_mosaic_switched_off_leaves_each_image_alone_in_workers_too(tmp_path: Path) -> None:
    dataset = _coloured_dataset(tmp_path, _plain_mosaic())
    assert dataset.mosaic_enabled
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1, persistent_workers=True,
                                         collate_fn=detection_collate, worker_init_fn=worker_init_fn)

    def epoch() -> list[tuple[int, set[int], bool]]:
        out = []
        for images, targets in loader:
            colours = {tuple(c) for c in images[0].permute(1, 2, 0).reshape(-1, 3).tolist()}
            own = {COLOURS[targets[0]["image_id"]]}
            out.append((targets[0]["image_id"], set(targets[0]["labels"].tolist()), colours == own))
        return out

    first = [epoch() for _ in range(3)]
    # On: some item shows another image's box or pixels.
    assert any(labels != {image_id} or not alone for items in first for image_id, labels, alone in items)
    dataset.set_mosaic(False)  # in the main process; the persistent worker must see it
    assert not dataset.mosaic_enabled
    for image_id, labels, alone in epoch():
        assert labels == {image_id} and alone


def test_mosaic_switch_needs_a_mosaic_step(tmp_path: Path) -> None:
    dataset = _coloured_dataset(tmp_path, build_transforms("light", 32, train=True))
    assert not dataset.mosaic_enabled
    with pytest.raises(ValueError, match="no A.Mosaic"):
        dataset.set_mosaic(True)
