"""GPU figures, ours vs torchvision's ``ssdlite320_mobilenet_v3_large``, in one run on one card.

- training throughput (images/s) at ``--train-batch`` with bf16 autocast (SGD step included);
- inference latency (median ms) at batch 1 and ``--infer-batch``: normalisation, network,
  decoding and NMS on the GPU for both (torchvision's own transform + postprocess; ours the same
  steps), from 320x320 uint8 images already on the device.

    python benchmarks/gpu.py --json gpu.json

``--device cpu`` runs the same steps on the CPU (a quick check of the script, not a figure to quote).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from detector import build_model
from detector.checkpoint import resolve_device
from detector.files import atomic_write_text
from detector.training.reference import reference_model

SIDE = 320
NUM_CLASSES = 91  # COCO's 90 category ids + background, for both models


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 5) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup``, the device's queue drained."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def random_targets(batch: int, device: torch.device) -> list[dict[str, Tensor]]:
    """Three boxes per image: ``{"boxes": FloatTensor[3, 4] xyxy pixels, "labels": Int64Tensor[3]}``."""
    generator = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=generator) * 200
        wh = 40 + torch.rand(3, 2, generator=generator) * 80
        targets.append({"boxes": torch.cat((xy, xy + wh), 1).to(device),
                        "labels": torch.randint(1, NUM_CLASSES, (3,), generator=generator).to(device)})
    return targets


def train_throughput(model: nn.Module, loss_fn: Callable[..., Tensor], batch: int, device: torch.device,
                     repeats: int) -> float:
    """Images per second of forward + loss + backward + SGD step, under bf16 autocast."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.rand(batch, 3, SIDE, SIDE, device=device)
    targets = random_targets(batch, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model, images, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    return batch / statistics.median(timed(step, device, repeats))


def inference_latency(ours: nn.Module, theirs: nn.Module, batch: int, device: torch.device,
                      repeats: int) -> dict[str, float]:
    """Median ms of uint8 images in, detections out, for both models."""
    images = torch.randint(0, 256, (batch, 3, SIDE, SIDE), device=device, dtype=torch.uint8)
    mean = torch.tensor(ours.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(ours.std, device=device).view(1, 3, 1, 1) * 255

    @torch.inference_mode()
    def run_ours() -> None:
        x = (images.float() - mean) / std
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits, regression = ours(x)
        ours.postprocess(logits, regression, [(SIDE, SIDE)] * batch)

    @torch.inference_mode()
    def run_theirs() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            theirs([im.float() / 255 for im in images])

    return {"ours_ms": 1000 * statistics.median(timed(run_ours, device, repeats)),
            "torchvision_ms": 1000 * statistics.median(timed(run_theirs, device, repeats))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda", help="default: %(default)s ('auto': CUDA when available)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    ours = build_model("ssdlite_mobilenetv2", num_classes=NUM_CLASSES).to(device)
    theirs = reference_model(NUM_CLASSES).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "torchvision": torchvision.__version__}
    results["train_images_per_s"] = {
        "ours": train_throughput(ours, lambda m, x, t: m.compute_loss(x, t)["loss"], args.train_batch, device,
                                 args.repeats),
        "torchvision": train_throughput(theirs, lambda m, x, t: sum(m(list(x), t).values()), args.train_batch,
                                        device, args.repeats),
    }
    ours.eval()
    theirs.eval()
    results["inference_latency"] = {f"batch{batch}": inference_latency(ours, theirs, batch, device, args.repeats)
                                    for batch in (1, args.infer_batch)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text)
    return results


if __name__ == "__main__":
    main()
