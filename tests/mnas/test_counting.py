"""Parameter and MAC counting on small modules with hand-computed counts, and on
MobileNetV2 against its published numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnas.counting import arch_stats, count_macs, count_params
from mnas.spaces import get_space


def test_params_of_simple_layers() -> None:
    assert count_params(nn.Conv2d(3, 8, 3, bias=False)) == 3 * 8 * 9
    assert count_params(nn.Conv2d(8, 8, 5, groups=8)) == 8 * 25 + 8
    assert count_params(nn.Linear(10, 5)) == 55
    assert count_params(nn.BatchNorm2d(4)) == 8  # running stats are buffers, not params
    shared = nn.Linear(4, 4)
    assert count_params(nn.Sequential(shared, nn.ReLU(), shared)) == 20


@pytest.mark.parametrize(("layer", "shape", "expected"), [
    # output elements x (in / groups) x kh x kw
    (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10), 8 * 100 * 3 * 9),
    (nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 10, 10), 8 * 25 * 3 * 9),
    (nn.Conv2d(8, 16, 3, padding=1, groups=4), (1, 8, 6, 6), 16 * 36 * 2 * 9),
    (nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), (1, 8, 6, 6), 8 * 36 * 25),
    (nn.Conv2d(4, 6, (1, 3)), (2, 4, 5, 5), 2 * 6 * 5 * 3 * 4 * 3),
    (nn.Linear(10, 5), (4, 10), 4 * 5 * 10),
])
def test_macs_of_single_layers(layer: nn.Module, shape: tuple[int, ...], expected: int) -> None:
    assert count_macs(layer, shape) == expected


def test_uncounted_ops_and_side_effects() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.train()
    before = model[1].running_mean.clone()
    assert count_macs(model, (1, 3, 8, 8)) == 64 * 4 * 3 + 2 * 4
    assert model.training  # mode restored
    assert torch.equal(model[1].running_mean, before)  # BN stats untouched
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        count_params("model")
    with pytest.raises(TypeError, match="nn.Module"):
        count_macs(object())
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(nn.Linear(2, 2), (0, 2))


def test_arch_stats_of_mobilenetv2_and_scaling() -> None:
    space = get_space("mnasnet")
    mbv2 = space.named()["mobilenetv2"]
    full = arch_stats(space, mbv2)  # deployment defaults: 1000 classes, 224
    assert full["params"] == 3_504_872
    assert abs(full["macs"] - 300.8e6) / 300.8e6 < 0.02
    big = arch_stats(space, mbv2, num_classes=10, resolution=448)
    # the classifier shrinks by 990 x (1280 + 1); conv MACs scale with pixels (x4)
    assert full["params"] - big["params"] == 990 * 1281
    assert (big["macs"] - 1280 * 10) == 4 * (full["macs"] - 1280 * 1000)
    a1 = arch_stats(space, space.named()["mnasnet-a1-nearest"])
    # MnasNet-A1 itself: 3.9M params, 312M MACs; the nearest point has block 5 at 120 not 112
    assert 3.8e6 < a1["params"] < 4.1e6 and 300e6 < a1["macs"] < 330e6
    with pytest.raises(ValueError, match="resolution"):
        arch_stats(space, mbv2, resolution=0)
