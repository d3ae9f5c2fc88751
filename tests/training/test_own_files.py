"""Correct on the user's own files (issue #39): categories matched by name in validation and evaluation,
eval and validate agreeing on a set with an unreadable image, a zoo start with the wrong preset refused,
resume from last.ckpt alone, and what a run says while it trains."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch

from detector.data.synthetic import SyntheticConfig, make_synthetic
from detector.training.cli import main

from training_helpers import tiny_args

ROOT = Path(__file__).resolve().parents[2]


def load_eval_tool():
    spec = importlib.util.spec_from_file_location("tools_eval_own_files", ROOT / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def renumbered(source: Path, target: Path, new_ids: dict[str, int]) -> Path:
    """The same file with each category's id replaced (by name), annotations following."""
    coco = json.loads(source.read_text())
    old_to_new = {c["id"]: new_ids[c["name"]] for c in coco["categories"]}
    coco["categories"] = [{"id": new_ids[c["name"]], "name": c["name"]} for c in coco["categories"]]
    for ann in coco["annotations"]:
        ann["category_id"] = old_to_new[ann["category_id"]]
    target.write_text(json.dumps(coco))
    return target


def validate_map(data: Path, run: Path, ckpt: Path, val_annotations: Path, work: Path) -> float:
    args = tiny_args(data, work, **{"data.val_annotations": val_annotations, "data.train_annotations": None,
                                    "data.train_images": None, "data.image_size": 96, "data.batch_size": 16,
                                    "trainer.max_epochs": None})
    metrics = main(["validate", *args, f"--ckpt_path={ckpt}"]).trainer.callback_metrics
    return float(metrics["val/mAP"])


@pytest.fixture(scope="module")
def reversed_val(learned_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, _ = learned_run
    names = [c["name"] for c in json.loads((data / "val.json").read_text())["categories"]]
    assert len(names) >= 2
    # The ids in reverse order: every class keeps its name and gets another class's id.
    return renumbered(data / "val.json", tmp_path_factory.mktemp("renumbered") / "val_reversed.json",
                      {name: len(names) - i for i, name in enumerate(names)})


def test_validate_and_eval_match_categories_by_name(learned_run: tuple[Path, Path], reversed_val: Path,
                                                    tmp_path: Path) -> None:
    data, run = learned_run
    ckpt = run / "checkpoints" / "last.ckpt"
    original = validate_map(data, run, ckpt, data / "val.json", tmp_path / "a")
    assert original > 0.01
    assert validate_map(data, run, ckpt, reversed_val, tmp_path / "b") == pytest.approx(original, abs=1e-9)

    tool = load_eval_tool()
    for view in ([], ["--letterbox"]):  # the batch path, and the Predictor's (wide-frame views)
        scores = []
        for annotations in (data / "val.json", reversed_val):
            out = tmp_path / f"{annotations.stem}{len(view)}_metrics.json"
            assert tool.main(["--checkpoint", str(ckpt), "--images", str(data / "val"), "--annotations",
                              str(annotations), "--output", str(out), "--num-workers", "0", *view]) == 0
            scores.append(json.loads(out.read_text())["AP"])
        assert scores[0] == pytest.approx(scores[1], abs=1e-12) and scores[0] > 0.01
        if not view:
            assert scores[0] == pytest.approx(original, abs=1e-9)


def test_eval_against_a_file_of_other_names_is_refused(learned_run: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data, run = learned_run
    coco = json.loads((data / "val.json").read_text())
    for category in coco["categories"]:
        category["name"] = f"dog{category['id']}"
    dogs = tmp_path / "dogs.json"
    dogs.write_text(json.dumps(coco))
    assert load_eval_tool().main(["--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--images",
                                  str(data / "val"), "--annotations", str(dogs), "--output",
                                  str(tmp_path / "m.json")]) != 0
    err = capsys.readouterr().err
    assert "none of the model's classes" in err and "dog1" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def set_with_a_broken_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    make_synthetic(root, num_train=8, num_val=6, seed=5, config=SyntheticConfig(image_size=96, min_size=24, clutter=0))
    coco = json.loads((root / "val.json").read_text())
    broken = root / "val" / coco["images"][0]["file_name"]
    broken.write_bytes(broken.read_bytes()[:64])  # a truncated file, still listed with its boxes
    return root


def test_eval_and_validate_agree_on_an_unreadable_image_and_name_it(
        set_with_a_broken_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    data = set_with_a_broken_image
    run = tmp_path / "run"
    main(["fit", *tiny_args(data, run, **{"trainer.max_epochs": 1, "data.image_size": 96})])
    ckpt = run / "checkpoints" / "last.ckpt"
    broken = json.loads((data / "val.json").read_text())["images"][0]["file_name"]
    with caplog.at_level(logging.INFO):
        validated = float(main(["validate", *tiny_args(data, tmp_path / "v", **{"data.image_size": 96,
                                                                                "trainer.max_epochs": None}),
                                f"--ckpt_path={ckpt}"]).trainer.callback_metrics["val/mAP"])
    assert any(broken in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
    capsys.readouterr()
    out = tmp_path / "metrics.json"
    assert load_eval_tool().main(["--checkpoint", str(ckpt), "--images", str(data / "val"), "--annotations",
                                  str(data / "val.json"), "--output", str(out), "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx(validated, abs=1e-9)
    assert metrics["num_images"] == 5 and "1 of the 6 images" in printed and broken in printed


def test_resume_needs_only_last_ckpt(tiny_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_run = tmp_path / "init"
    main(["fit", *tiny_args(tiny_coco, init_run, **{"trainer.max_epochs": 1})])
    init = tmp_path / "init.ckpt"
    (init_run / "checkpoints" / "last.ckpt").rename(init)
    run = tmp_path / "run"
    main(["fit", *tiny_args(tiny_coco, run, **{"trainer.max_epochs": 1, "model.init_checkpoint": init})])
    init.unlink()
    # No download either: an empty hub cache and no network.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    last = run / "checkpoints" / "last.ckpt"
    resumed = main(["fit", *tiny_args(tiny_coco, run, **{"trainer.max_epochs": 2}), f"--ckpt_path={last}"])
    assert resumed.trainer.global_step == 6 and resumed.model.hparams.init_checkpoint is None
    main(["validate", *tiny_args(tiny_coco, tmp_path / "v", **{"trainer.max_epochs": None}), f"--ckpt_path={last}"])


def test_a_zoo_start_with_another_preset_is_refused(tiny_coco: Path, tmp_path: Path) -> None:
    from detector.training.module import check_same_network
    from detector.zoo import zoo_models

    tf_config = zoo_models()["ssdlite_mobilenet_v2_voc_person"].config
    ours = {"preset": "ssdlite_mobilenetv2", "padding": "symmetric", "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "backbone": "mobilenet_v2", "backbone_taps": "expansion", "bn_eps": 1e-3,
            "reduced_tail": False}
    with pytest.raises(ValueError, match=r"give --model.preset ssdlite_mobilenet_v2_tf") as info:
        check_same_network(ours, tf_config, "zoo:ssdlite_mobilenet_v2_voc_person")
    assert "padding tf_same there, symmetric here" in str(info.value)
    check_same_network({**ours, **{k: tf_config[k] for k in ("padding", "mean", "std")}}, tf_config, "zoo:x")


def test_each_validation_says_one_line_and_the_fit_a_summary(tiny_coco: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        main(["fit", *tiny_args(tiny_coco, tmp_path / "a", **{"trainer.max_epochs": 2})])
    lines = [r.getMessage() for r in caplog.records]
    per_validation = [line for line in lines if line.startswith("validation, epoch")]
    assert len(per_validation) == 2 and all("val/mAP" in line and "best.ckpt" in line for line in per_validation)
    assert any("best.ckpt (val/mAP" in line and "last.ckpt" in line for line in lines)
    caplog.clear()
    with caplog.at_level(logging.INFO):  # shorter than the validation interval: no best.ckpt, and it says so
        main(["fit", *tiny_args(tiny_coco, tmp_path / "b", **{"trainer.max_epochs": 1,
                                                               "trainer.check_val_every_n_epoch": 5})])
    assert any("no best.ckpt" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "b" / "checkpoints" / "best.ckpt").exists()
