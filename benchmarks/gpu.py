"""GPU figures, ours vs torchvision's ``ssdlite320_mobilenet_v3_large``, in one run on one card.

- training throughput (images/s) at ``--train-batch`` with bf16 autocast (SGD step included);
- inference latency (median ms) at batch 1 and ``--infer-batch``: normalisation, network,
  decoding and NMS on the GPU for both (torchvision's own transform + postprocess; ours the same
  steps), from 320x320 uint8 images already on the device.

    python benchmarks/gpu.py --json gpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchvision
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from detector import build_model


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def random_targets(batch: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=generator) * 200
        wh = 40 + torch.rand(3, 2, generator=generator) * 80
        targets.append({"boxes": torch.cat((xy, xy + wh), 1).to(device),
                        "labels": torch.randint(1, 91, (3,), generator=generator).to(device)})
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    ours = build_model("ssdlite_mobilenetv2", num_classes=91).to(device)
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).to(device)
    mean = torch.tensor(ours.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(ours.std, device=device).view(1, 3, 1, 1) * 255
    results: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                  "torchvision": torchvision.__version__}

    def train_step(model, step):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        images = torch.rand(args.train_batch, 3, 320, 320, device=device)
        targets = random_targets(args.train_batch, device)

        def run():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step(model, images, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.train()
        times = timed(run, args.repeats, 5)
        return args.train_batch / statistics.median(times)

    results["train_images_per_s"] = {
        "ours": train_step(ours, lambda m, x, t: m.compute_loss(x, t)["loss"]),
        "torchvision": train_step(theirs, lambda m, x, t: sum(m(list(x), t).values())),
    }
    ours.eval()
    theirs.eval()
    latency = {}
    for batch in (1, args.infer_batch):
        images = torch.randint(0, 256, (batch, 3, 320, 320), device=device, dtype=torch.uint8)

        @torch.inference_mode()
        def run_ours():
            x = (images.float() - mean) / std
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits, regression = ours(x)
            ours.postprocess(logits, regression, [(320, 320)] * batch)

        @torch.inference_mode()
        def run_theirs():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                theirs([im.float() / 255 for im in images])

        latency[f"batch{batch}"] = {
            "ours_ms": 1000 * statistics.median(timed(run_ours, args.repeats, 5)),
            "torchvision_ms": 1000 * statistics.median(timed(run_theirs, args.repeats, 5)),
        }
    results["inference_latency"] = latency
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
