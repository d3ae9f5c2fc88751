"""Zoo tests: torchvision's SSDLite with random weights and BatchNorm statistics (no download here)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.zoo.equivalence import randomise


@pytest.fixture(scope="module")
def torchvision_ssdlite() -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    return randomise(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None))
