"""One clear line per bad input, in every tool (issue #39, cases 6 and 7): each case below answers with
one ``error:`` line naming the flag or file and the problem, exits non-zero, and prints no traceback."""
from __future__ import annotations

import importlib.util
import json
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from detector import LabelMap, build_model, save_checkpoint
from detector.data.synthetic import SyntheticConfig, make_synthetic
from detector.training.cli import main as train_main
from detector.training.cli import run_tool

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}_bad_input", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(call) -> int:
    """The exit status of a tool's main, whether it returns it or exits with it."""
    try:
        return call()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def one_error_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    make_synthetic(root, num_train=4, num_val=2, seed=1, config=SyntheticConfig(image_size=64))
    return root


def fit_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["fit", f"--data.train_images={data / 'train'}", f"--data.train_annotations={data / 'train.json'}",
            "--data.batch_size=2", "--data.num_workers=0", "--data.image_size=64", "--model.width_mult=0.35",
            "--trainer.max_steps=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={run_dir}", *extra]


@pytest.mark.parametrize(("extra", "needles"), [
    (["--data.image_size=0"], ["--data.image_size", "got 0"]),
    (["--ckpt_path=/nonexistent/last.ckpt"], ["--ckpt_path", "/nonexistent/last.ckpt"]),
    (["--model.preset=ssdlite_mobilenetv3"], ["--model.preset", "ssdlite_mobilenetv3", "ssdlite_mobilenet_v2_tf"]),
    (["--data.train_annotations=/nonexistent/train.json"], ["--data.train_annotations", "/nonexistent/train.json"]),
], ids=["image-size-0", "missing-ckpt-path", "preset-typo", "missing-annotations"])
def test_train_options(extra: list[str], needles: list[str], data: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lambda: run_tool(train_main, fit_args(data, tmp_path, *extra))) != 0
    one_error_line(capsys, *needles)


def test_train_bad_category_id_names_the_file(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coco = json.loads((data / "train.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(coco))
    args = fit_args(data, tmp_path, f"--data.train_annotations={bad}")
    assert run(lambda: run_tool(train_main, args)) != 0
    one_error_line(capsys, str(bad), "category_id")


def test_train_offline_imagenet_offers_the_ways_without_it(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    args = fit_args(data, tmp_path, "--model.pretrained_backbone=imagenet", "--model.width_mult=1.0")
    assert run(lambda: run_tool(train_main, args)) != 0
    one_error_line(capsys, "mobilenet_v2-b0353104.pth", "--model.pretrained_backbone none", "finetune_zoo_tf.yaml")


def test_an_init_checkpoint_skips_the_imagenet_download(data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    init = tmp_path / "init.ckpt"
    save_checkpoint(init, build_model(num_classes=4, width_mult=1.0, image_size=64), LabelMap((1, 2, 3), ("a", "b", "c")))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded ImageNet weights"))
    args = fit_args(data, tmp_path / "run", "--model.pretrained_backbone=imagenet", "--model.width_mult=1.0",
                    f"--model.init_checkpoint={init}")
    cli = train_main(args[1:], run=False)  # without "fit": instantiate only
    assert cli.model.model.config["pretrained_backbone"] == "none"


def test_show_dataset_image_size_0(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("show_dataset")
    assert run(lambda: tool.main(["--images", str(data / "train"), "--annotations", str(data / "train.json"),
                                  "--output", str(tmp_path), "--image-size", "0"])) != 0
    one_error_line(capsys, "--image-size", "got 0")


def test_convert_dataset_wrong_annotations_folder(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("convert_dataset")
    missing = tmp_path / "no_such_folder"
    assert run(lambda: tool.main(["--from", "voc", "--images", str(data / "train"), "--annotations", str(missing),
                                  "--output", str(tmp_path / "out.json")])) != 0
    one_error_line(capsys, str(missing))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.ckpt"
    save_checkpoint(path, build_model(num_classes=2, width_mult=0.35, image_size=64), LabelMap((1,), ("shape",)))
    return path


def test_predict_text_file_named_onnx(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model\n")
    tool = load_tool("predict")
    assert run(lambda: tool.main(["--checkpoint", str(fake), "--input", str(data / "val"),
                                  "--output", str(tmp_path / "out")])) != 0
    one_error_line(capsys, str(fake), "ONNX")


def test_predict_text_file_as_checkpoint_says_what_it_is(data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes\n")
    tool = load_tool("predict")
    assert run(lambda: tool.main(["--checkpoint", str(notes), "--input", str(data / "val"),
                                  "--output", str(tmp_path / "out")])) != 0
    line = one_error_line(capsys, str(notes), "not a PyTorch checkpoint")
    assert "unpickle" not in line


@pytest.mark.parametrize("tool_name", ["predict", "eval"])
@pytest.mark.parametrize("flag", [["--slice-overlap", "0.3"], ["--slice-no-full-frame"]])
def test_tile_options_without_slice(tool_name: str, flag: list[str], ckpt: Path, data: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool(tool_name)
    args = ["--checkpoint", str(ckpt), "--images" if tool_name == "eval" else "--input", str(data / "val")]
    args += ["--annotations", str(data / "val.json"), "--output", str(tmp_path / "m.json")] if tool_name == "eval" \
        else ["--output", str(tmp_path / "out")]
    assert run(lambda: tool.main([*args, *flag])) != 0
    one_error_line(capsys, flag[0], "--slice")


def test_nms_graph_refusal_names_the_models_values(tmp_path: Path) -> None:
    from detector.deploy.onnx_export import NmsExportModule

    model = build_model("ssdlite_mobilenet_v2_tf", num_classes=2, width_mult=0.35, image_size=64)
    with pytest.raises(ValueError) as info:
        NmsExportModule(model)
    assert "'clip_before_nms': False" in str(info.value)  # the model's value, not the graph's (True)
