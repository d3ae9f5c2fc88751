"""COCO evaluator: pycocotools itself is the oracle; edge cases, both backends, DDP gather, plots."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco import (
    BACKENDS,
    COCO_STATS_KEYS,
    CocoEvaluator,
    evaluate_detections,
    format_summary,
    predictions_to_results,
    run_coco_eval,
)
from detector.labels import LabelMap

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco-eval-reference"
REF_GT = REFERENCE / "faster_coco_eval" / "cocoapi" / "instances_val2014_100.json"
REF_DT = REFERENCE / "cocoapi_results" / "instances_val2014_fakebbox100_results.json"


def gt_dict(images: int = 3, categories: tuple[str, ...] = ("cat", "dog"), anns: list[dict] | None = None) -> dict:
    """A tiny COCO ground truth: ``images`` 200x200 images, categories with ids 1, 2, ..."""
    anns = anns or []
    for i, a in enumerate(anns, start=1):
        a.setdefault("id", i)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in range(1, images + 1)],
        "categories": [{"id": i, "name": n} for i, n in enumerate(categories, start=1)],
        "annotations": anns,
    }


def det(image_id: int, category_id: int, bbox: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def pycocotools_stats(gt: dict, dets: list[dict]) -> list[float]:
    """The oracle: plain pycocotools, as its README uses it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def synthetic_case(num_images: int = 20, seed: int = 0) -> tuple[dict, list[dict]]:
    """Random ground truth (3 classes, all sizes, a few crowd boxes) and jittered detections + false positives."""
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for image_id in range(1, num_images + 1):
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(8, 150, size=2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
            cat = int(rng.integers(1, 4))
            anns.append({"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "iscrowd": int(rng.random() < 0.05)})
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
                dets.append(det(image_id, cat, [x + jitter[0], y + jitter[1], abs(w + jitter[2]), abs(h + jitter[3])],
                                float(rng.random())))
        for _ in range(rng.integers(0, 4)):
            w, h = rng.uniform(8, 100, size=2)
            dets.append(det(image_id, int(rng.integers(1, 4)), [*rng.uniform(0, 100, size=2), w, h], float(rng.random())))
    return gt_dict(num_images, ("a", "b", "c"), anns), dets


def stats_of(metrics: dict) -> list[float]:
    return [metrics[k] for k in COCO_STATS_KEYS]


# -- agreement with pycocotools -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_reference_data_both_backends_agree_with_pycocotools(backend):
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is absent")
    dets = json.loads(REF_DT.read_text())
    reference = run_coco_eval(str(REF_GT), dets, backend="pycocotools").metrics
    metrics = evaluate_detections(str(REF_GT), REF_DT, backend=backend)
    assert stats_of(metrics) == pytest.approx(stats_of(reference), abs=1e-12)
    assert metrics["num_images"] == 100 and metrics["num_detections"] == 734
    assert metrics["per_class"].keys() == reference["per_class"].keys()
    for name, row in reference["per_class"].items():
        assert metrics["per_class"][name]["gt"] == row["gt"]
        assert metrics["per_class"][name]["AP"] == pytest.approx(row["AP"], abs=1e-12)
        assert metrics["per_class"][name]["AP50"] == pytest.approx(row["AP50"], abs=1e-12)
    # The caller's list is not modified (loadRes adds keys in place).
    assert set(dets[0]) == {"image_id", "category_id", "bbox", "score"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_synthetic_case_equals_pycocotools(backend):
    gt, dets = synthetic_case()
    assert stats_of(evaluate_detections(gt, dets, backend=backend)) == pytest.approx(pycocotools_stats(gt, dets), abs=1e-12)


def test_per_class_ap_is_pycocotools_ap_with_one_category():
    gt, dets = synthetic_case()
    per_class = evaluate_detections(gt, dets)["per_class"]
    for cat_id, name in ((1, "a"), (2, "b"), (3, "c")):
        one_gt = dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] == cat_id])
        stats = pycocotools_stats(one_gt, [d for d in dets if d["category_id"] == cat_id])
        assert per_class[name]["AP"] == pytest.approx(stats[0], abs=1e-12)
        assert per_class[name]["AP50"] == pytest.approx(stats[1], abs=1e-12)
        assert per_class[name]["gt"] == sum(1 for a in one_gt["annotations"] if not a["iscrowd"])


def test_metrics_keys_and_types():
    gt, dets = synthetic_case(5)
    metrics = evaluate_detections(gt, dets)
    assert list(metrics) == [*COCO_STATS_KEYS, "per_class", "num_images", "num_detections"]
    assert all(type(metrics[k]) is float for k in COCO_STATS_KEYS)
    assert set(metrics["per_class"]["a"]) == {"AP", "AP50", "gt"}
    json.dumps(metrics)  # plain JSON types only


def test_format_summary_is_pycocotools_text():
    gt, dets = synthetic_case()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.summarize()
    assert format_summary(evaluate_detections(gt, dets)) == out.getvalue().rstrip("\n")


# -- edge cases ------------------------------------------------------------------------------------
ALL_SIZES = [
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},  # small
    {"image_id": 1, "category_id": 1, "bbox": [50, 50, 60, 60]},  # medium
    {"image_id": 2, "category_id": 2, "bbox": [0, 0, 150, 150]},  # large
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_gives_zeros(backend):
    metrics = evaluate_detections(gt_dict(anns=copy.deepcopy(ALL_SIZES)), [], backend=backend)
    assert stats_of(metrics) == [0.0] * 12
    assert metrics["num_detections"] == 0
    assert metrics["per_class"]["cat"] == {"AP": 0.0, "AP50": 0.0, "gt": 2}


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_and_no_large_objects_gives_minus_one_there(backend):
    gt = gt_dict(anns=copy.deepcopy(ALL_SIZES[:2]))
    metrics = evaluate_detections(gt, [], backend=backend)
    # pycocotools: -1 where there is nothing to measure (no large ground truth), 0 elsewhere.
    expected = {k: 0.0 for k in COCO_STATS_KEYS} | {"APl": -1.0, "ARl": -1.0}
    assert {k: metrics[k] for k in COCO_STATS_KEYS} == expected
    assert metrics["per_class"]["dog"] == {"AP": -1.0, "AP50": -1.0, "gt": 0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_detections_on_an_image_without_ground_truth_are_false_positives(backend):
    gt = gt_dict(anns=copy.deepcopy(ALL_SIZES))
    perfect = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in ALL_SIZES]
    assert evaluate_detections(gt, perfect, backend=backend)["AP"] == pytest.approx(1.0)
    # Image 3 has no ground truth: a confident box there costs precision; a weak one after all hits does not.
    strong = perfect + [det(3, 1, [20, 20, 40, 40], 0.95)]
    weak = perfect + [det(3, 1, [20, 20, 40, 40], 0.1)]
    m_strong = evaluate_detections(gt, strong, backend=backend)
    assert m_strong["AP"] < 1.0
    assert stats_of(m_strong) == pytest.approx(pycocotools_stats(gt, strong), abs=1e-12)
    assert evaluate_detections(gt, weak, backend=backend)["AP"] == pytest.approx(1.0)
    assert m_strong["num_images"] == 3 and m_strong["num_detections"] == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_crowd_regions_are_ignored_not_missed(backend):
    anns = copy.deepcopy(ALL_SIZES) + [{"image_id": 2, "category_id": 1, "bbox": [100, 0, 100, 100], "iscrowd": 1}]
    gt = gt_dict(anns=anns)
    perfect = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in ALL_SIZES]
    # Several confident boxes inside the crowd region: matched to it, so neither FP nor TP.
    in_crowd = [det(2, 1, [110 + 20 * i, 10, 20, 20], 0.95) for i in range(4)]
    metrics = evaluate_detections(gt, perfect + in_crowd, backend=backend)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["per_class"]["cat"]["gt"] == 2  # the crowd box is not a ground truth to find
    assert stats_of(metrics) == pytest.approx(pycocotools_stats(gt, perfect + in_crowd), abs=1e-12)
    # Without the crowd annotation the same boxes are false positives.
    assert evaluate_detections(gt_dict(anns=copy.deepcopy(ALL_SIZES)), perfect + in_crowd, backend=backend)["AP"] < 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_image_id_not_in_ground_truth_is_named(backend):
    gt = gt_dict(anns=copy.deepcopy(ALL_SIZES))
    with pytest.raises(ValueError, match=r"image id\(s\) 999 .*not in the ground truth"):
        evaluate_detections(gt, [det(1, 1, [10, 10, 20, 20], 0.9), det(999, 1, [0, 0, 5, 5], 0.5)], backend=backend)


def test_detection_category_not_in_ground_truth_is_named():
    gt = gt_dict(anns=copy.deepcopy(ALL_SIZES))
    with pytest.raises(ValueError, match=r"category id\(s\) 7 "):
        evaluate_detections(gt, [det(1, 7, [10, 10, 20, 20], 0.9)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_category_without_ground_truth(backend):
    gt = gt_dict(categories=("cat", "dog", "unicorn"), anns=copy.deepcopy(ALL_SIZES))
    dets = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in ALL_SIZES]
    dets.append(det(1, 3, [100, 100, 50, 50], 0.99))  # a "unicorn": no ground truth of that class anywhere
    metrics = evaluate_detections(gt, dets, backend=backend)
    assert metrics["per_class"]["unicorn"] == {"AP": -1.0, "AP50": -1.0, "gt": 0}
    # pycocotools leaves a category without ground truth out of the mean: it cannot lower AP.
    assert metrics["AP"] == pytest.approx(1.0)
    assert stats_of(metrics) == pytest.approx(pycocotools_stats(gt, dets), abs=1e-12)


# -- the evaluator object --------------------------------------------------------------------------
def as_predictions(dets: list[dict], label_map: LabelMap, image_ids: list[int]) -> list[dict]:
    """COCO results -> per-image model outputs (xyxy tensors, contiguous labels)."""
    out = []
    for image_id in image_ids:
        mine = [d for d in dets if d["image_id"] == image_id]
        xywh = torch.tensor([d["bbox"] for d in mine], dtype=torch.float64).reshape(-1, 4)
        out.append({
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1).float(),
            "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float32),
            "labels": torch.tensor([label_map.label_of_category(d["category_id"]) for d in mine], dtype=torch.int64),
        })
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluator_matches_results_file_evaluation(backend, tmp_path):
    gt, dets = synthetic_case()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    label_map = LabelMap.from_categories(gt["categories"])
    ids = [img["id"] for img in gt["images"]]
    preds = as_predictions(dets, label_map, ids)
    evaluator = CocoEvaluator(path, label_map=label_map, backend=backend)
    for start in range(0, len(ids), 7):
        evaluator.process(ids[start:start + 7], preds[start:start + 7])
    metrics = evaluator.evaluate()
    results = predictions_to_results(ids, preds, label_map)
    assert evaluator.results() == results
    assert metrics == evaluate_detections(gt, results, backend=backend)
    assert metrics["num_images"] == len(ids) and metrics["num_detections"] == len(dets)
    # reset() forgets everything.
    evaluator.reset()
    assert evaluator.num_processed == 0


def test_evaluator_scores_only_processed_images_unless_all_images():
    gt, dets = synthetic_case()
    label_map = LabelMap.from_categories(gt["categories"])
    preds = as_predictions(dets, label_map, [1, 2, 3, 4])
    subset = CocoEvaluator(gt, label_map=label_map)
    subset.process([1, 2, 3, 4], preds)
    results = predictions_to_results([1, 2, 3, 4], preds, label_map)
    assert subset.evaluate() == evaluate_detections(gt, results, image_ids=[1, 2, 3, 4])
    everything = CocoEvaluator(gt, label_map=label_map, all_images=True)
    everything.process([1, 2, 3, 4], preds)
    assert everything.evaluate() == evaluate_detections(gt, results)


def test_evaluator_with_nothing_processed_is_all_minus_one():
    metrics = CocoEvaluator(gt_dict(anns=copy.deepcopy(ALL_SIZES))).evaluate()
    assert stats_of(metrics) == [-1.0] * 12 and metrics["num_images"] == 0


def test_evaluator_accepts_category_ids_and_numpy_and_keeps_first_copy():
    gt = gt_dict(anns=copy.deepcopy(ALL_SIZES))
    good = {"boxes": np.array([[10, 10, 30, 30], [50, 50, 110, 110]]), "scores": np.array([0.9, 0.8]),
            "category_ids": np.array([1, 1])}
    bad = {"boxes": np.array([[0, 0, 1, 1]]), "scores": np.array([0.99]), "category_ids": np.array([1])}
    evaluator = CocoEvaluator(gt)
    evaluator.process([1, 1], [good, bad])  # a padded repeat of image 1 must not add its boxes twice
    assert evaluator.evaluate()["per_class"]["cat"]["AP"] == pytest.approx(1.0)


def test_evaluator_rejects_labels_without_label_map_and_out_of_range_labels():
    gt = gt_dict(anns=copy.deepcopy(ALL_SIZES))
    pred = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="LabelMap"):
        CocoEvaluator(gt).process([1], [pred])
    with pytest.raises(ValueError, match=r"labels must be in 1\.\.2"):
        CocoEvaluator(gt, label_map=LabelMap.from_categories(gt["categories"])).process([1], [dict(pred, labels=torch.tensor([3]))])


def test_evaluator_accepts_a_pycocotools_coco_for_either_backend():
    gt, dets = synthetic_case(6)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    for backend in BACKENDS:
        evaluator = CocoEvaluator(coco, backend=backend, all_images=True)
        assert evaluator.evaluate()["num_images"] == 6


# -- DDP: 2 processes (gloo, CPU) give the 1-process result ----------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        gt, dets = synthetic_case(num_images=21, seed=3)
        label_map = LabelMap.from_categories(gt["categories"])
        ids = [img["id"] for img in gt["images"]]
        # DistributedSampler-style shares: interleaved, the shorter one padded with images of the other.
        share = ids[rank::world]
        share += ids[: (len(ids) + world - 1) // world - len(share)]
        evaluator = CocoEvaluator(gt, label_map=label_map)
        preds = as_predictions(dets, label_map, share)
        for start in range(0, len(share), 4):
            evaluator.process(share[start:start + 4], preds[start:start + 4])
        metrics = evaluator.evaluate()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(
            {"metrics": metrics, "has_run": evaluator.last_run is not None, "share": share}))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_one_process(tmp_path):
    world = 2
    init_file = str(tmp_path / "dist_init")  # must not exist yet: the file store creates it
    # The two ranks are started from a fresh interpreter, not from the pytest process, so they inherit
    # nothing of the state earlier tests left in it (runtimes' thread pools, handlers).
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "import torch.multiprocessing as mp; from test_coco import _ddp_worker; "
              f"mp.spawn(_ddp_worker, args=({world}, {init_file!r}, {str(tmp_path)!r}), nprocs={world}, join=True)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    assert set(ranks[0]["share"]) & set(ranks[1]["share"]), "the shares should overlap, as sampler padding does"

    gt, dets = synthetic_case(num_images=21, seed=3)
    label_map = LabelMap.from_categories(gt["categories"])
    ids = [img["id"] for img in gt["images"]]
    single = CocoEvaluator(gt, label_map=label_map)
    single.process(ids, as_predictions(dets, label_map, ids))
    expected = json.loads(json.dumps(single.evaluate()))
    assert ranks[0]["metrics"] == expected
    assert ranks[1]["metrics"] == expected  # broadcast: every rank returns rank 0's dict
    assert ranks[0]["has_run"] and not ranks[1]["has_run"]  # only rank 0 evaluated


# -- plots -----------------------------------------------------------------------------------------
def test_pr_curves_and_gallery(tmp_path):
    from detector.evaluation.plots import plot_gallery, plot_pr_curves, score_images

    gt, dets = synthetic_case(num_images=6)
    images = tmp_path / "images"
    images.mkdir()
    for img in gt["images"]:
        Image.new("RGB", (img["width"], img["height"]), (40, 90, 140)).save(images / img["file_name"])
    run = run_coco_eval(gt, dets, backend="faster-coco-eval")
    curves = plot_pr_curves(run, tmp_path / "plots")
    assert curves[0].name == "pr_all.png"
    with_gt = [name for name, row in run.metrics["per_class"].items() if row["gt"] > 0]
    assert len(curves) == 1 + len(with_gt)
    gallery = plot_gallery(run, images, tmp_path / "plots", num_images=4)
    assert [p.name for p in gallery] == ["gallery_worst.png", "gallery_best.png"]
    for path in curves + gallery:
        assert path.stat().st_size > 1000 and Image.open(path).format == "PNG"
    # A perfect image scores F1 = 1.
    perfect = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in ALL_SIZES]
    scores = {s.image_id: s for s in score_images(run_coco_eval(gt_dict(anns=copy.deepcopy(ALL_SIZES)), perfect))}
    assert scores[1].f1 == 1.0 and scores[1].tp == 2 and 3 not in scores


class FixedBoxRunner:
    """A runner of detector.inference's contract: one "car" box per image, in that image's pixels."""

    image_size, mean, std, device = (64, 64), (0.5,) * 3, (0.25,) * 3, torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, images, image_sizes=None):
        self.calls.append((tuple(images.shape), [tuple(s) for s in image_sizes]))
        return [{"boxes": torch.tensor([[20.0, 10.0, 80.0, 60.0]]), "scores": torch.tensor([0.5]),
                 "labels": torch.tensor([1])} for _ in image_sizes]


def test_evaluate_on_dataset_runs_a_runner_over_every_image_and_scores_like_pycocotools(tmp_path):
    from detector.evaluation.evaluate import evaluate_on_dataset

    gt = {
        "images": [{"id": i, "file_name": f"img{i}.jpg", "width": 160, "height": 120} for i in range(1, 5)],
        "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "boat"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 3 if i % 2 else 7, "bbox": [20, 10, 60, 50],
                         "area": 3000, "iscrowd": 0} for i in range(1, 5)],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "images").mkdir()
    for im in gt["images"]:
        Image.new("RGB", (160, 120), (90, 90, 90)).save(tmp_path / "images" / im["file_name"])
    runner = FixedBoxRunner()
    run, results = evaluate_on_dataset(runner, LabelMap((3, 7), ("car", "boat")), tmp_path / "images",
                                       tmp_path / "gt.json", batch_size=3, num_workers=0, progress=False)
    assert runner.calls == [((3, 3, 64, 64), [(120, 160)] * 3), ((1, 3, 64, 64), [(120, 160)])]
    assert results == [{"image_id": i, "category_id": 3, "bbox": [20.0, 10.0, 60.0, 50.0], "score": 0.5}
                       for i in range(1, 5)]
    # The oracle: pycocotools on the same results. Cars: 2 of 4 detections hit; boats: none detected.
    coco_gt = COCO()
    coco_gt.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        oracle = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        oracle.evaluate()
        oracle.accumulate()
        oracle.summarize()
    assert [run.metrics[k] for k in COCO_STATS_KEYS] == pytest.approx(list(oracle.stats), abs=1e-12)
    assert run.metrics["per_class"]["boat"]["AP"] == 0.0 and run.metrics["per_class"]["car"]["AP50"] > 0.4
    # Matched by name: a class the file lacks is left out (and said), the categories both know are scored.
    subset, _ = evaluate_on_dataset(runner, LabelMap((3, 9), ("car", "ship")), tmp_path / "images",
                                    tmp_path / "gt.json", num_workers=0, progress=False)
    assert list(subset.metrics["per_class"]) == ["car"]
    assert any("ship" in note and "boat" in note for note in subset.notes)
    with pytest.raises(ValueError, match=r"none of the model's classes \['ship'\]"):
        evaluate_on_dataset(runner, LabelMap((9,), ("ship",)), tmp_path / "images", tmp_path / "gt.json",
                            num_workers=0, progress=False)
